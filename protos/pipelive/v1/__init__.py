"""Generated code for the proto package `pipelive.v1` (regenerate with `make protos`)."""
