"""Generated protobuf and gRPC modules of the appliance.v1 API (see scripts/gen_proto.py)."""
