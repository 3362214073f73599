"""The discrete-event simulator of an application on a cluster, its scenarios and its actuator."""
