"""The discrete-event simulator of an application on a cluster and of a serving pipeline, and their
actuators."""
