"""Sum of squares computed by tasks spread over every node of the cluster."""
import ray

ray.init()


# SPREAD places the tasks round-robin over the nodes that have a free CPU, so every worker
# node takes part (the default policy may keep short tasks on one node).
@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def square(x):
    return x * x, ray.get_runtime_context().get_node_id()


results = ray.get([square.remote(i) for i in range(32)])
total = sum(r[0] for r in results)
nodes = len({r[1] for r in results})
print(f"sum of squares: {total}")
print(f"nodes used: {nodes}")
print(f"nodes in the cluster: {len([n for n in ray.nodes() if n['Alive']])}")
