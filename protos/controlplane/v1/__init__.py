"""Generated code for the proto package `controlplane.v1` (regenerate with `make protos`)."""
