"""Built-in controllers, one module per strategy, registered as plugins are (a later issue)."""
