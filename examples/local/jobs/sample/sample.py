"""Sum of squares computed by tasks spread over every node of the cluster."""
import socket

import ray

ray.init()


@ray.remote(num_cpus=1)
def square(x):
    return x * x, ray.get_runtime_context().get_node_id()


results = ray.get([square.remote(i) for i in range(32)])
total = sum(r[0] for r in results)
nodes = len({r[1] for r in results})
print(f"sum of squares: {total}")
print(f"nodes used: {nodes}")
