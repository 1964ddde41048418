//! Naming rules of each service, and the names raydeploy derives from the deployment name.

/// Kubernetes DNS-1123 label: ≤ 63, lowercase alphanumerics and `-`, alphanumeric at both ends.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    dns_like(s, 63, false)
}

/// DNS-1035 label (RayCluster and RayJob names): a DNS-1123 label that starts with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns_like(s, 63, true)
}

fn dns_like(s: &str, max: usize, letter_first: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > max {
        return Err(format!("is {} characters long; at most {max} are allowed", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("contains `{c}`; only lowercase letters, digits and `-` are allowed"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    if letter_first && !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain (Secret names): ≤ 253, labels joined by dots.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!("is {} characters long; at most 253 are allowed", s.len()));
    }
    s.split('.').try_for_each(dns1123_label)
}

/// AKS Linux node pool: 1–12 lowercase alphanumerics, starting with a letter.
pub fn aks_pool(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 12 {
        return Err(format!("is {} characters long; AKS pool names have 1 to 12", s.len()));
    }
    if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("may contain only lowercase letters and digits (AKS pool names)".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter (AKS pool names)".into());
    }
    Ok(())
}

/// ACR: 5–50 alphanumerics.
pub fn acr(s: &str) -> Result<(), String> {
    if s.len() < 5 || s.len() > 50 {
        return Err(format!("is {} characters long; registry names have 5 to 50", s.len()));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("may contain only letters and digits (registry names)".into());
    }
    Ok(())
}

/// Azure resource group: 1–90 of letters, digits, `_`, `-`, `.`, `(`, `)`; not ending in `.`.
pub fn resource_group(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 90 {
        return Err(format!("is {} characters long; resource group names have 1 to 90", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_alphanumeric() || "_-.()".contains(*c))) {
        return Err(format!("contains `{c}`; resource group names allow letters, digits, _ - . ( )"));
    }
    if s.ends_with('.') {
        return Err("must not end with `.` (resource group names)".into());
    }
    Ok(())
}

/// AKS cluster name: 1–63 letters, digits, `_`, `-`; alphanumeric at both ends.
pub fn aks_cluster(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("is {} characters long; AKS cluster names have 1 to 63", s.len()));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("may contain only letters, digits, _ and - (AKS cluster names)".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start and end with a letter or digit (AKS cluster names)".into());
    }
    Ok(())
}

/// Storage account: 3–24 lowercase letters and digits.
pub fn storage_account(s: &str) -> Result<(), String> {
    if s.len() < 3 || s.len() > 24 || !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("must have 3 to 24 characters, all lowercase letters and digits (storage account names)".into());
    }
    Ok(())
}

/// Environment variable name: a C identifier.
pub fn env_var(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err("is not a valid environment variable name (letters, digits, _; not starting with a digit)".into())
    }
}

/// Secret data key: `[-._a-zA-Z0-9]+`.
pub fn secret_key(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
        Ok(())
    } else {
        Err("may contain only letters, digits, `-`, `_` and `.` (Secret keys)".into())
    }
}

/// An image repository without tag or digest, e.g. `docker.io/acme/ray` or `localhost:5000/ray`:
/// lowercase path components of letters, digits, `.`, `_`, `-` (a host may carry a port).
pub fn image_repository(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.contains('@') {
        return Err("must not carry a digest (`@sha256:…`): raydeploy sets the tag".into());
    }
    let parts: Vec<&str> = s.split('/').collect();
    let last = parts.last().copied().unwrap_or_default();
    if last.contains(':') {
        return Err("must not carry a tag: raydeploy derives the tag from the Ray version and content".into());
    }
    for (i, p) in parts.iter().enumerate() {
        let host = i == 0 && parts.len() > 1 && (p.contains('.') || p.contains(':') || *p == "localhost");
        let ok = if host {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        } else {
            !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        if !ok {
            return Err(format!(
                "has the path component `{p}`; repository paths allow only lowercase letters, digits, `.`, `_` and `-`"
            ));
        }
    }
    Ok(())
}

/// Debian package name, optionally pinned: `name[:arch][=version]`.
pub fn apt_package(s: &str) -> Result<(), String> {
    let (name, version) = s.split_once('=').map_or((s, None), |(n, v)| (n, Some(v)));
    let name = name.split_once(':').map_or(name, |(n, _)| n);
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let version_ok =
        version.is_none_or(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c)));
    if name_ok && version_ok {
        Ok(())
    } else {
        Err("is not a Debian package name (lowercase letters, digits, + - .; optionally =version)".into())
    }
}

/// A node pool name derived from a group name: lowercase alphanumerics, starting with a letter,
/// at most 12 characters.
pub fn pool_from_group(group: &str) -> String {
    let mut s: String = group.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert(0, 'w');
    }
    s.truncate(12);
    s
}

/// Default ACR name: `acr` + the deployment name's alphanumerics (≤ 50).
pub fn default_acr(deployment: &str) -> String {
    let mut s = format!("acr{}", deployment.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>());
    s.truncate(50);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(dns1123_label("supply-chain").is_ok());
        assert!(dns1123_label("Supply").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1035_label("1abc").is_err());
        assert!(aks_pool("gput4").is_ok());
        assert!(aks_pool("averyveryverylong").is_err());
        assert!(acr("acr1").is_err());
        assert!(acr("acr-1234").is_err());
        assert!(resource_group("rg-x.").is_err());
        assert_eq!(pool_from_group("gpu-t4"), "gput4");
        assert_eq!(pool_from_group("4xl"), "w4xl");
        assert_eq!(pool_from_group("very-long-group-name"), "verylonggrou");
        assert_eq!(default_acr("supply-chain"), "acrsupplychain");
        assert!(env_var("SP_SECRET").is_ok() && env_var("sp-akv").is_err());
        assert!(image_repository("docker.io/acme/ray").is_ok());
        assert!(image_repository("localhost:5000/ray").is_ok());
        assert!(image_repository("docker.io/acme/ray:latest").is_err());
        assert!(image_repository("docker.io/Acme/ray").is_err());
        assert!(image_repository("").is_err());
    }
}
