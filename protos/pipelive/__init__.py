"""Generated code for the proto package `pipelive`."""
