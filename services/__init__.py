"""What the control plane manages: the demo application and the PipeLive serving service (later issues)."""
