//! Template overrides (`templates/` next to the spec) through the real binary: a template sees
//! only what raydeploy passes in (no environment, clock or randomness), cannot recurse or
//! allocate without bound, and is read only from inside `templates/`. Every refusal is a
//! located problem naming the template file, exit code 1, nothing written, no crash.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;

/// A secret value in the environment, as a `fromEnv` source would read it.
const CANARY: &str = "canary-7c1e-template-leak";

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// The kubernetes example with a `fromEnv` secret, and the given template overrides.
    fn new(templates: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = std::fs::read_to_string("examples/kubernetes/raydeploy.yaml").unwrap();
        spec.push_str("\nsecrets:\n  - name: leak\n    data:\n      token: { fromEnv: TPL_CANARY }\n");
        std::fs::write(dir.path().join("raydeploy.yaml"), spec).unwrap();
        let p = Project { dir };
        for (name, text) in templates {
            p.write(name, text);
        }
        p
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.templates().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn templates(&self) -> PathBuf {
        self.dir.path().join("templates")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("raydeploy")
            .unwrap()
            .args(args)
            .arg(self.dir.path().join("raydeploy.yaml"))
            .env("TPL_CANARY", CANARY)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn render(&self) -> Output {
        let out = self.out();
        Command::cargo_bin("raydeploy")
            .unwrap()
            .arg("render")
            .arg(self.dir.path().join("raydeploy.yaml"))
            .arg("--out")
            .arg(&out)
            .env("TPL_CANARY", CANARY)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Exit code 1 (not a crash), the message, the file (and line), nothing written, no canary.
fn refused(p: &Project, o: &Output, file: &str, line: Option<usize>, words: &[&str]) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "exit 1, not a crash or success:\n{t}");
    let at = match line {
        Some(l) => format!("{file}:{l}:"),
        None => file.to_string(),
    };
    assert!(t.contains(&at), "the problem names {at}:\n{t}");
    for w in words {
        assert!(t.contains(w), "the message says {w:?}:\n{t}");
    }
    assert!(t.contains("nothing was written or run"), "{t}");
    assert!(!t.contains(CANARY), "the secret reached the output:\n{t}");
    assert!(!p.out().exists(), "nothing is written");
    t
}

#[test]
fn a_template_cannot_read_the_environment_the_clock_or_randomness() {
    let leak = "FROM {{ image.base }}:{{ image.base_tag }}\n# token\nLABEL t=\"{{ get_env(name=\"TPL_CANARY\") }}\"\n";
    let p = Project::new(&[("Dockerfile.tera", leak)]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", Some(3), &["get_env", "environment"]);
    refused(&p, &p.run(&["validate"]), "templates/Dockerfile.tera", Some(3), &["get_env"]);
    refused(&p, &p.run(&["deploy", "--dry-run"]), "templates/Dockerfile.tera", Some(3), &["get_env"]);

    // Inside a set, an if, a loop or a macro, in any template, each one reported.
    let hidden = "{% set t = get_env(name=\"TPL_CANARY\", default=\"\") %}\n{% if now() %}x{% endif %}\n{% for i in [get_random(start=0, end=9)] %}{% endfor %}\n{% macro m() %}{{ get_env(name=\"HOME\") }}{% endmacro m %}\n";
    let p = Project::new(&[("terraform/outputs.tf.tera", hidden)]);
    let t = refused(&p, &p.render(), "templates/terraform/outputs.tf.tera", Some(1), &["get_env"]);
    for (line, f) in [(2, "now"), (3, "get_random"), (4, "get_env")] {
        assert!(t.contains(&format!("outputs.tf.tera:{line}:")) && t.contains(f), "{f} at line {line}:\n{t}");
    }
    assert!(t.contains("4 problems found"), "{t}");
}

#[test]
fn recursion_is_refused_before_rendering() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, usize, &'a [&'a str]);
    let cases: &[Case] = &[
        (&[("Dockerfile.tera", "FROM x\n{% include \"Dockerfile.tera\" %}\n")], "Dockerfile.tera", 2, &["itself"]),
        (
            &[
                ("Dockerfile.tera", "FROM x\n{% include \"terraform/main.tf.tera\" %}\n"),
                ("terraform/main.tf.tera", "# main\n{% include \"Dockerfile.tera\" %}\n"),
            ],
            "terraform/main.tf.tera",
            2,
            &["a cycle", "main.tf.tera →"],
        ),
        (
            &[("Dockerfile.tera", "FROM x\n{% macro m(n) %}{{ self::m(n=n) }}{% endmacro m %}\n{{ self::m(n=1) }}\n")],
            "Dockerfile.tera",
            2,
            &["macro `m`", "itself"],
        ),
        (&[("Dockerfile.tera", "{% import \"Dockerfile.tera\" as me %}FROM x\n")], "Dockerfile.tera", 1, &["itself"]),
        (
            &[("Dockerfile.tera", "FROM x\n{% include \"../../etc/passwd\" %}\n")],
            "Dockerfile.tera",
            2,
            &["not one of raydeploy's templates"],
        ),
    ];
    for (templates, file, line, words) in cases {
        let p = Project::new(templates);
        refused(&p, &p.render(), &format!("templates/{file}"), Some(*line), words);
    }
}

#[test]
fn loops_and_sizes_are_bounded() {
    let cases: &[(&str, &[&str])] = &[
        ("FROM x\n{% for i in range(end=200000000) %}{{ i }}{% endfor %}\n", &["200000000", "10000"]),
        ("FROM x\n{% for i in range(end=5, step_by=0) %}{% endfor %}\n", &["step_by"]),
        (
            "FROM x\n{% for i in range(end=10000) %}{% for j in range(end=10000) %}{% endfor %}{% endfor %}\n",
            &["loop iterations"],
        ),
        (
            "FROM x\n{% set_global s = \"ab\" %}{% for i in range(end=64) %}\n{% set_global s = s ~ s %}{% endfor %}\n",
            &["larger than 1 MiB"],
        ),
    ];
    for (template, words) in cases {
        let p = Project::new(&[("Dockerfile.tera", template)]);
        let line = if template.contains("s ~ s") { 3 } else { 2 };
        refused(&p, &p.render(), "templates/Dockerfile.tera", Some(line), words);
    }
    // Deep nesting (5000 levels overflow tera's parser on an 8 MiB stack): refused before parsing.
    let deep = format!("FROM x\n{{{{ {}1{} }}}}\n", "(".repeat(5000), ")".repeat(5000));
    let p = Project::new(&[("Dockerfile.tera", &deep)]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", Some(2), &["brackets nest"]);
    let ifs = format!("FROM x\n{}{}", "{% if true %}".repeat(5000), "{% endif %}".repeat(5000));
    let p = Project::new(&[("Dockerfile.tera", &ifs)]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", Some(2), &["nest more than"]);
}

#[test]
fn syntax_and_render_errors_name_the_file_and_line() {
    let p = Project::new(&[("Dockerfile.tera", "FROM x\n\nRUN {{ image.base_tag | nope }}\n")]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", Some(3), &["unknown filter `nope`"]);
    let p = Project::new(&[("Dockerfile.tera", "FROM x\nRUN {% if %}\n")]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", Some(2), &["syntax error"]);
    let p = Project::new(&[("Dockerfile.tera", "FROM x\n\n\nRUN {{ no_such_value }}\n")]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", Some(4), &["no_such_value"]);
}

#[test]
fn template_files_are_read_only_from_inside_templates() {
    // A link out of the folder (to a file holding the secret), a folder, an oversized file.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("t"), format!("FROM x # {CANARY}\n")).unwrap();
    let p = Project::new(&[]);
    std::fs::create_dir_all(p.templates()).unwrap();
    std::os::unix::fs::symlink(outside.path().join("t"), p.templates().join("Dockerfile.tera")).unwrap();
    refused(&p, &p.render(), "templates/Dockerfile.tera", None, &["resolves to"]);

    std::fs::write(outside.path().join("Dockerfile.tera"), format!("FROM x # {CANARY}\n")).unwrap();
    let p = Project::new(&[]);
    std::os::unix::fs::symlink(outside.path(), p.dir.path().join("templates")).unwrap();
    refused(&p, &p.render(), "templates/Dockerfile.tera", None, &["resolves to"]);

    let p = Project::new(&[]);
    std::fs::create_dir_all(p.templates().join("Dockerfile.tera")).unwrap();
    refused(&p, &p.render(), "templates/Dockerfile.tera", None, &["not a regular file"]);

    let p = Project::new(&[("Dockerfile.tera", &format!("FROM x\n#{}\n", "x".repeat(300 * 1024)))]);
    refused(&p, &p.render(), "templates/Dockerfile.tera", None, &["larger than 256 KiB"]);

    // Inside the spec's folder but out of templates/: a template links only within templates/,
    // checked for every template, the Dockerfile's at validation too.
    let p = Project::new(&[]);
    std::fs::create_dir_all(p.templates().join("terraform")).unwrap();
    std::fs::write(p.dir.path().join("notes.tf"), format!("# {CANARY}\n")).unwrap();
    std::os::unix::fs::symlink("../../notes.tf", p.templates().join("terraform/main.tf.tera")).unwrap();
    refused(&p, &p.render(), "templates/terraform/main.tf.tera", None, &["outside templates/"]);
    let p = Project::new(&[]);
    std::fs::create_dir_all(p.templates()).unwrap();
    std::os::unix::fs::symlink("../raydeploy.yaml", p.templates().join("Dockerfile.tera")).unwrap();
    refused(&p, &p.run(&["validate"]), "templates/Dockerfile.tera", None, &["outside templates/"]);
    let p = Project::new(&[("terraform/outputs.tf.tera", &format!("#{}\n", "x".repeat(300 * 1024)))]);
    refused(&p, &p.render(), "templates/terraform/outputs.tf.tera", None, &["larger than 256 KiB"]);

    // A link that stays inside templates/ is followed.
    let p = Project::new(&[("docker/base.tera", "FROM {{ image.base }}:{{ image.base_tag }}\n")]);
    std::os::unix::fs::symlink(p.templates().join("docker/base.tera"), p.templates().join("Dockerfile.tera")).unwrap();
    let o = p.render();
    assert!(o.status.success(), "{}", text(&o));
    let df = std::fs::read_to_string(p.out().join("image/Dockerfile")).unwrap();
    assert_eq!(df, "FROM rayproject/ray:2.52.0-py312\n");
}

#[test]
fn overrides_still_use_filters_loops_macros_and_includes() {
    let tpl = "{% import \"terraform/outputs.tf.tera\" as unused %}{% macro pkgs(list) %}{% for p in list %} {{ p | sh }}{% endfor %}{% endmacro pkgs %}FROM {{ image.base }}:{{ image.base_tag }}\nRUN echo{{ self::pkgs(list=[\"a b\", \"c\"]) }}{% for i in range(end=3) %}{{ i }}{% endfor %}\nLABEL n={{ name | upper | docker_json }}\n";
    let p = Project::new(&[("Dockerfile.tera", tpl)]);
    let o = p.render();
    assert!(o.status.success(), "{}", text(&o));
    let df = std::fs::read_to_string(p.out().join("image/Dockerfile")).unwrap();
    assert!(df.starts_with("FROM rayproject/ray:2.52.0-py312\nRUN echo 'a b' c012\nLABEL n=\""), "{df}");
}
