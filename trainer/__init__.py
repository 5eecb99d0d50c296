"""A DDP training worker that reads only torchrun's environment contract."""
