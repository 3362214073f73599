"""Generated code for the proto package `controlplane`."""
