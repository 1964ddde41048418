"""Sum of squares computed by tasks spread over every node of the cluster that has CPUs."""
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init()

# One bundle of one CPU on each node that has CPUs (STRICT_SPREAD: never two on one node); the
# tasks go round-robin over the bundles, so every such node computes some of them, whatever
# the timing.
cpu_nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
pg = placement_group([{"CPU": 1}] * len(cpu_nodes), strategy="STRICT_SPREAD")
ray.get(pg.ready())


@ray.remote(num_cpus=1)
def square(x):
    return x * x, ray.get_runtime_context().get_node_id()


results = ray.get(
    [
        square.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i % len(cpu_nodes))
        ).remote(i)
        for i in range(32)
    ]
)
print(f"sum of squares: {sum(r[0] for r in results)}")
print(f"nodes used: {len({r[1] for r in results})}")
print(f"nodes in the cluster: {len([n for n in ray.nodes() if n['Alive']])}")
