//! Environment overlays: `environments/<env>.yaml` deep-merged over the spec. Maps merge, lists
//! of named items merge by `name`, other lists and scalars replace.

use std::collections::HashMap;

use super::diag::{Problem, Problems};
use super::node::{Node, Path, Value};

/// Lists whose items are matched by their `name` field.
pub const NAMED_LISTS: [&str; 4] = ["workerGroups", "secrets", "jobs", "mounts"];

/// Merges `overlay` into `base`. Linear in the size of both: map keys are looked up in the
/// base's index, named-list items by a name index built once per list.
pub fn merge(base: &mut Node, overlay: Node, path: &Path, problems: &mut Problems) {
    match (&mut base.value, overlay.value) {
        (Value::Map(base_entries), Value::Map(over_entries)) => {
            for (key, entry) in over_entries {
                match base_entries.get_mut(&key) {
                    Some(existing) => {
                        let child_path = path.key(&key);
                        let overlay_loc = entry.value.loc;
                        merge(&mut existing.value, entry.value, &child_path, problems);
                        // a replaced value points into the overlay: so does its key
                        if existing.value.loc == overlay_loc {
                            existing.key_loc = entry.key_loc;
                        }
                    }
                    None => {
                        base_entries.insert(key, entry);
                    }
                }
            }
        }
        (Value::Seq(base_items), Value::Seq(over_items)) if is_named_list(path) => {
            // the first base item of each name, as a lookup would find it
            let mut by_name: HashMap<String, usize> = HashMap::with_capacity(base_items.len());
            for (i, item) in base_items.iter().enumerate() {
                if let Some(name) = item_name(item) {
                    by_name.entry(name.to_string()).or_insert(i);
                }
            }
            for (i, item) in over_items.into_iter().enumerate() {
                let Some(name) = item_name(&item).map(str::to_string) else {
                    problems.push(
                        Problem::new(
                            path.index(i),
                            format!("an overlay item of `{}` needs a `name` to merge by", last_key(path)),
                        )
                        .help("name the item it changes, or the new item it adds")
                        .at(item.loc),
                    );
                    continue;
                };
                match by_name.get(&name) {
                    Some(&at) => merge(&mut base_items[at], item, &path.index(i), problems),
                    None => {
                        by_name.insert(name, base_items.len());
                        base_items.push(item);
                    }
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.loc = overlay.loc;
        }
    }
}

fn item_name(item: &Node) -> Option<&str> {
    item.get("name").and_then(Node::as_str)
}

fn last_key(path: &Path) -> String {
    match path.0.last() {
        Some(super::node::Step::Key(k)) => k.clone(),
        _ => String::new(),
    }
}

fn is_named_list(path: &Path) -> bool {
    NAMED_LISTS.contains(&last_key(path).as_str())
}

#[cfg(test)]
mod tests {
    use super::super::node::parse;
    use super::*;

    #[test]
    fn named_lists_merge_by_name_and_others_replace() {
        let mut base = parse(
            "cluster:\n  workerGroups:\n    - {name: a, replicas: 1}\n    - {name: b, replicas: 2}\nimage:\n  pipPackages: [x, y]\n",
            0,
            "the spec",
        )
        .unwrap()
        .doc;
        let over = parse(
            "cluster:\n  workerGroups:\n    - {name: b, replicas: 5}\n    - {name: c}\nimage:\n  pipPackages: [z]\n",
            1,
            "the overlay",
        )
        .unwrap()
        .doc;
        let mut problems = Problems::default();
        merge(&mut base, over, &Path::root(), &mut problems);
        assert!(problems.is_empty());
        let j = base.to_json();
        assert_eq!(j["cluster"]["workerGroups"][0]["replicas"], 1);
        assert_eq!(j["cluster"]["workerGroups"][1]["replicas"], 5);
        assert_eq!(j["cluster"]["workerGroups"][2]["name"], "c");
        assert_eq!(j["image"]["pipPackages"], serde_json::json!(["z"]));
        // the merged value and its key remember they came from the overlay
        assert_eq!(base.locate(&Path::parse("cluster.workerGroups[1].replicas")).loc.source, 1);
        assert_eq!(base.locate_key(&Path::parse("cluster.workerGroups[1].replicas")).source, 1);
        assert_eq!(base.locate_key(&Path::parse("cluster.workerGroups[0].replicas")).source, 0);
    }

    /// 40k named items merged with 40k overlay items (200k nodes each, under the reader's limit): a
    /// scan of the list per overlay item would look at about 2 billion names; the name index keeps
    /// it linear (no time is measured: the size makes a quadratic merge blow the suite).
    #[test]
    fn large_named_lists_merge_by_a_name_index() {
        const N: usize = 40_000;
        let base: String = (0..N).map(|i| format!("    - {{name: g{i}, replicas: 1}}\n")).collect();
        let over: String = (0..N).map(|i| format!("    - {{name: g{}, replicas: 2}}\n", i * 2)).collect();
        let mut base = parse(&format!("cluster:\n  workerGroups:\n{base}"), 0, "the spec").unwrap().doc;
        let over = parse(&format!("cluster:\n  workerGroups:\n{over}"), 1, "the overlay").unwrap().doc;
        let mut problems = Problems::default();
        merge(&mut base, over, &Path::root(), &mut problems);
        assert!(problems.is_empty());
        let groups = base.to_json()["cluster"]["workerGroups"].as_array().unwrap().clone();
        // even names up to 2N: half of them existed (merged), half are new (appended)
        assert_eq!(groups.len(), N + N / 2);
        assert_eq!(groups[0]["replicas"], 2);
        assert_eq!(groups[1]["replicas"], 1);
        assert_eq!(groups[N]["name"], format!("g{N}"));
        assert_eq!(groups[N + N / 2 - 1]["name"], format!("g{}", 2 * N - 2));
    }
}
