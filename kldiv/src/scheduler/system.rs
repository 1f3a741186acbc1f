//! What the list of GPU adapters depends on, read without loading a driver: enumerating
//! adapters loads every Vulkan driver on the machine (~40 ms for lavapipe, whose LLVM must be
//! relocated; a real driver's libraries are as large), so a run whose cached calibration was
//! measured on the same system takes it on this description instead.
//!
//! Linux only (elsewhere `None`: the adapters are enumerated as before). It holds the
//! environment variables that steer the Vulkan loader, wgpu and kldiv; the driver manifests
//! the loader reads (name, size, modification time: a driver's upgrade rewrites its
//! manifest); the display controllers on the PCI bus (vendor and device: a swapped card); the
//! NVIDIA kernel driver's version line; and the GPU device nodes. A change it cannot see (a
//! driver library replaced under an unchanged manifest) leaves a stale calibration: the
//! placement may then be slower, never wrong (the engine opened is the one present), and
//! deleting the cache measures again.

use std::path::{Path, PathBuf};

/// Environment variables that change which adapters exist or which one is taken.
const STEERING: [&str; 12] = [
    "VK_ICD_FILENAMES",
    "VK_DRIVER_FILES",
    "VK_ADD_DRIVER_FILES",
    "VK_LOADER_DRIVERS_SELECT",
    "VK_LOADER_DRIVERS_DISABLE",
    "MESA_VK_DEVICE_SELECT",
    "LD_LIBRARY_PATH",
    "XDG_CONFIG_DIRS",
    "XDG_DATA_DIRS",
    "WGPU_BACKEND",
    "WGPU_ADAPTER_NAME",
    "KLDIV_ADAPTER",
];

/// This machine's description (see the module), or `None` where there is none to give.
pub fn fingerprint() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    Some(fingerprint_of(
        &|name| std::env::var(name).ok(),
        Path::new("/"),
    ))
}

/// [`fingerprint`] with the environment read through `env` and the system's paths under
/// `root` (tests give their own).
pub fn fingerprint_of(env: &dyn Fn(&str) -> Option<String>, root: &Path) -> String {
    let mut out = String::new();
    for name in STEERING {
        if let Some(v) = env(name) {
            out += &format!("{name}={v}\n");
        }
    }
    for dir in manifest_dirs(env, root) {
        for name in sorted_names(&dir) {
            if let (true, Ok(meta)) = (name.ends_with(".json"), std::fs::metadata(dir.join(&name)))
            {
                out += &format!("icd {}/{name} {}\n", dir.display(), stamp(&meta));
            }
        }
    }
    for name in sorted_names(&root.join("sys/bus/pci/devices")) {
        let dev = root.join("sys/bus/pci/devices").join(&name);
        let read = |f: &str| std::fs::read_to_string(dev.join(f)).unwrap_or_default();
        let class = read("class");
        // PCI class 0x03: display controllers.
        if class.trim().starts_with("0x03") {
            out += &format!(
                "pci {name} {} {} {}\n",
                class.trim(),
                read("vendor").trim(),
                read("device").trim()
            );
        }
    }
    if let Ok(v) = std::fs::read_to_string(root.join("proc/driver/nvidia/version")) {
        out += &format!("nvidia {}\n", v.lines().next().unwrap_or("").trim());
    }
    for name in sorted_names(&root.join("dev/dri")) {
        out += &format!("dri {name}\n");
    }
    for name in sorted_names(&root.join("dev")) {
        if name.starts_with("nvidia") {
            out += &format!("dev {name}\n");
        }
    }
    out
}

/// Where the Vulkan loader looks for driver manifests, in its order.
fn manifest_dirs(env: &dyn Fn(&str) -> Option<String>, root: &Path) -> Vec<PathBuf> {
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    let list = |var: &str, default: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| under(d).join("vulkan/icd.d"))
            .collect::<Vec<_>>()
    };
    let mut dirs = list("XDG_CONFIG_DIRS", "/etc/xdg");
    dirs.push(under("/etc/vulkan/icd.d"));
    if let Some(home) =
        env("XDG_DATA_HOME").or_else(|| env("HOME").map(|h| format!("{h}/.local/share")))
    {
        dirs.push(under(&home).join("vulkan/icd.d"));
    }
    dirs.extend(list("XDG_DATA_DIRS", "/usr/local/share:/usr/share"));
    dirs
}

/// A directory's entry names, sorted (none where it cannot be read). Names only: /dev holds
/// hundreds of entries, and only the manifests' metadata is wanted.
fn sorted_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Size and modification time (ns since the epoch, 0 where the system has none).
fn stamp(meta: &std::fs::Metadata) -> String {
    let t = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{} {t}", meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake root: a driver manifest, a display controller and a network card.
    fn root(tag: &str) -> PathBuf {
        let r = std::env::temp_dir().join(format!("kldiv-sys-{tag}-{}", std::process::id()));
        let icd = r.join("usr/share/vulkan/icd.d");
        std::fs::create_dir_all(&icd).unwrap();
        std::fs::write(icd.join("lvp_icd.json"), b"{}").unwrap();
        for (dev, class, device) in [
            ("0000:01:00.0", "0x030000", "0x2335"),
            ("0000:02:00.0", "0x020000", "0x1234"),
        ] {
            let d = r.join("sys/bus/pci/devices").join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("class"), class).unwrap();
            std::fs::write(d.join("vendor"), "0x10de").unwrap();
            std::fs::write(d.join("device"), device).unwrap();
        }
        r
    }

    #[test]
    fn it_changes_with_drivers_cards_and_the_environment() {
        let r = root("changes");
        let none = |_: &str| None;
        let a = fingerprint_of(&none, &r);
        assert_eq!(a, fingerprint_of(&none, &r), "deterministic");
        assert!(a.contains("lvp_icd.json"), "{a}");
        assert!(
            a.contains("0x2335") && !a.contains("0x1234"),
            "display controllers only: {a}"
        );
        // A driver upgraded (its manifest rewritten with another size).
        let icd = r.join("usr/share/vulkan/icd.d/lvp_icd.json");
        std::fs::write(&icd, b"{ }").unwrap();
        let b = fingerprint_of(&none, &r);
        assert_ne!(a, b);
        // Another card in the same slot.
        std::fs::write(r.join("sys/bus/pci/devices/0000:01:00.0/device"), "0x2330").unwrap();
        let c = fingerprint_of(&none, &r);
        assert_ne!(b, c);
        // The loader told to use other drivers.
        let steered = |n: &str| (n == "VK_ICD_FILENAMES").then(|| "/x/icd.json".to_string());
        assert_ne!(c, fingerprint_of(&steered, &r));
        // A manifest in a directory the environment adds.
        let extra = r.join("opt/share/vulkan/icd.d");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("nv.json"), b"{}").unwrap();
        let dirs = |n: &str| (n == "XDG_DATA_DIRS").then(|| "/opt/share".to_string());
        assert!(fingerprint_of(&dirs, &r).contains("nv.json"));
        std::fs::remove_dir_all(&r).ok();
    }
}
