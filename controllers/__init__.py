"""Built-in controllers, one module per strategy, registered through the `controlplane.controllers` entry
points exactly as a third-party plugin is; they import `controlplane` (the public API) only."""
