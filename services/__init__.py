"""What the control plane manages: the demo application (`demo`), its simulator (`sim`) and live processes
(`live`), and the PipeLive serving service (`pipelive`); `shared_data` locates the real data sets."""
