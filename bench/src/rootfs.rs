//! A generated, Debian-like root filesystem: the base layer of the test set.
//!
//! Packages with made-up names each contribute what a Debian package usually does:
//! ```text
//! usr/share/doc/PKG/{copyright,changelog.Debian.gz}   every package
//! usr/bin/BIN, usr/share/man/man1/BIN.1.gz            most
//! usr/lib/x86_64-linux-gnu/libPKG.so.1.2.3 + .so.1 -> symlink
//! usr/share/locale/LANG/LC_MESSAGES/PKG.mo            some, many languages each
//! usr/lib/python3/dist-packages/MOD/**.py             some, nested
//! usr/share/PKG/**                                    some, data trees
//! usr/include/PKG/*.h, etc/PKG/*.conf                 some
//! var/lib/dpkg/info/PKG.{list,md5sums}                every package
//! ```
//! plus the usual top-level symlinks (bin -> usr/bin …) and etc/alternatives links.
//! File sizes are log-normal (median about 2 KiB, capped at 4 MiB), the shape real
//! root filesystems have. Packages are added until the tree holds the requested number
//! of regular files. Everything depends only on the seed.

use crate::rng::Rng;
use std::collections::HashSet;

/// One entry of a layer, path relative to the layer root.
#[derive(Clone, Debug)]
pub enum Entry {
    File { path: String, size: u64 },
    Symlink { path: String, target: String },
}

const SYLLABLES: &[&str] = &[
    "lib", "gtk", "x", "py", "perl", "gnome", "kde", "net", "core", "util", "font", "data", "ssl",
    "xml", "z", "curl", "dbus", "sys", "tool", "common", "base", "glib", "cairo", "pango", "mesa",
    "gl", "audio", "pulse", "alsa", "sane", "cups", "krb", "ldap", "sasl", "gpg", "git", "vim",
    "emacs", "tex", "ruby", "node", "java", "qt", "icu", "boost", "llvm", "rust", "go", "lua",
    "tcl", "ncurses", "readline", "bz", "lzma", "zstd", "brotli", "jpeg", "png", "tiff", "webp",
    "gif", "svg", "pdf", "ps", "dvi", "man", "info", "doc", "fs",
];

const WORDS: &[&str] = &[
    "main",
    "util",
    "config",
    "types",
    "parser",
    "io",
    "net",
    "core",
    "helpers",
    "models",
    "views",
    "tests",
    "api",
    "client",
    "server",
    "cache",
    "errors",
    "compat",
    "backend",
    "frontend",
    "plugins",
    "icons",
    "themes",
    "schemas",
    "templates",
    "locale",
    "scripts",
    "hicolor",
    "scalable",
    "apps",
    "mime",
    "data",
    "misc",
    "extra",
    "contrib",
    "tools",
];

const LANGS: &[&str] = &[
    "af", "ar", "ast", "be", "bg", "bn", "bs", "ca", "cs", "cy", "da", "de", "el", "en_GB", "eo",
    "es", "et", "eu", "fa", "fi", "fr", "ga", "gl", "he", "hi", "hr", "hu", "id", "it", "ja", "ka",
    "kk", "ko", "lt", "lv", "ms", "nb", "nl", "pl", "pt", "pt_BR", "ro", "ru", "sk", "sl", "sr",
    "sv", "ta", "th", "tr", "uk", "vi", "zh_CN", "zh_TW",
];

/// The generated tree; `files` counts regular files only.
pub struct Rootfs {
    pub entries: Vec<Entry>,
    pub files: usize,
    /// Names of the python packages (directories under usr/lib/python3/dist-packages).
    pub python_dirs: Vec<String>,
}

struct Gen {
    rng: Rng,
    out: Vec<Entry>,
    files: usize,
    names: HashSet<String>,
    python_dirs: Vec<String>,
}

impl Gen {
    fn file(&mut self, path: String, median: f64, sigma: f64) {
        let size = self.rng.lognormal(median, sigma, 0, 4 << 20);
        self.out.push(Entry::File { path, size });
        self.files += 1;
    }

    fn link(&mut self, path: String, target: String) {
        self.out.push(Entry::Symlink { path, target });
    }

    fn unique_name(&mut self) -> String {
        loop {
            let parts = self.rng.range(1, 3);
            let mut n = String::new();
            for i in 0..parts {
                if i > 0 && self.rng.chance(0.4) {
                    n.push('-');
                }
                let i = self.rng.below(SYLLABLES.len() as u64) as usize;
                n.push_str(SYLLABLES[i]);
            }
            if self.rng.chance(0.3) {
                n.push_str(&self.rng.range(0, 12).to_string());
            }
            if self.names.insert(n.clone()) {
                return n;
            }
        }
    }

    /// A nested tree of `count` files under `root`, directory names from WORDS.
    fn tree(&mut self, root: &str, count: u64, ext: &str, median: f64) {
        let mut dirs = vec![root.to_string()];
        for i in 0..count {
            if self.rng.chance(0.12) && dirs.len() < 40 {
                let parent = self.rng.pick(&dirs).clone();
                let w = self.rng.pick(WORDS);
                dirs.push(format!("{parent}/{w}{}", dirs.len()));
            }
            let dir = self.rng.pick(&dirs).clone();
            let w = self.rng.pick(WORDS);
            self.file(format!("{dir}/{w}_{i}{ext}"), median, 1.3);
        }
    }

    fn package(&mut self) {
        let p = self.unique_name();
        let doc = format!("usr/share/doc/{p}");
        self.file(format!("{doc}/copyright"), 3000.0, 1.0);
        self.file(format!("{doc}/changelog.Debian.gz"), 1500.0, 1.2);
        let mut listed = 2;
        if self.rng.chance(0.6) {
            for i in 0..self.rng.range(1, 3) {
                let bin = if i == 0 {
                    p.clone()
                } else {
                    format!("{p}-{}", self.rng.pick(WORDS))
                };
                self.file(format!("usr/bin/{bin}"), 40_000.0, 1.2);
                if self.rng.chance(0.8) {
                    self.file(format!("usr/share/man/man1/{bin}.1.gz"), 1800.0, 0.8);
                }
                if self.rng.chance(0.15) {
                    self.link(format!("etc/alternatives/{bin}"), format!("/usr/bin/{bin}"));
                }
                listed += 2;
            }
        }
        if self.rng.chance(0.4) {
            let (maj, min) = (self.rng.range(0, 9), self.rng.range(0, 30));
            let lib = format!("usr/lib/x86_64-linux-gnu/lib{p}.so");
            self.file(format!("{lib}.{maj}.{min}.0"), 60_000.0, 1.3);
            self.link(format!("{lib}.{maj}"), format!("lib{p}.so.{maj}.{min}.0"));
            listed += 2;
        }
        if self.rng.chance(0.3) {
            let share = self.rng.range(3, 40) as f64 / LANGS.len() as f64;
            for lang in LANGS {
                if self.rng.chance(share) {
                    self.file(
                        format!("usr/share/locale/{lang}/LC_MESSAGES/{p}.mo"),
                        9000.0,
                        1.0,
                    );
                    listed += 1;
                }
            }
        }
        if self.rng.chance(0.2) {
            let m = p.replace('-', "_");
            let root = format!("usr/lib/python3/dist-packages/{m}");
            self.file(format!("{root}/__init__.py"), 300.0, 1.5);
            let n = self.rng.range(5, 60);
            self.tree(&root, n, ".py", 4000.0);
            self.python_dirs.push(root);
            listed += n;
        }
        if self.rng.chance(0.15) {
            let n = self.rng.range(10, 200);
            self.tree(&format!("usr/share/{p}"), n, ".dat", 2500.0);
            listed += n;
        }
        if self.rng.chance(0.1) {
            let n = self.rng.range(5, 50);
            self.tree(&format!("usr/include/{p}"), n, ".h", 3000.0);
            listed += n;
        }
        if self.rng.chance(0.3) {
            for i in 0..self.rng.range(1, 5) {
                let w = *self.rng.pick(WORDS);
                self.file(format!("etc/{p}/{w}{i}.conf"), 800.0, 1.2);
            }
        }
        if self.rng.chance(0.05) {
            self.link(format!("usr/share/doc/{p}-dev"), p.clone());
        }
        let info = format!("var/lib/dpkg/info/{p}");
        self.file(format!("{info}.list"), 60.0 * listed as f64, 0.3);
        self.file(format!("{info}.md5sums"), 70.0 * listed as f64, 0.3);
    }
}

/// Generate a root filesystem with at least `min_files` regular files.
pub fn generate(seed: u64, min_files: usize) -> Rootfs {
    let mut g = Gen {
        rng: Rng::derive(seed, "rootfs"),
        out: Vec::new(),
        files: 0,
        names: HashSet::new(),
        python_dirs: Vec::new(),
    };
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        g.link(l.into(), t.into());
    }
    g.link(
        "usr/lib64/ld-linux-x86-64.so.2".into(),
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
    );
    g.file(
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
        200_000.0,
        0.1,
    );
    for f in [
        "passwd",
        "group",
        "hostname",
        "os-release",
        "fstab",
        "ld.so.cache",
    ] {
        g.file(format!("etc/{f}"), 600.0, 1.0);
    }
    while g.files < min_files {
        g.package();
    }
    Rootfs {
        entries: g.out,
        files: g.files,
        python_dirs: g.python_dirs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_large_enough() {
        let a = generate(42, 2000);
        let b = generate(42, 2000);
        assert!(a.files >= 2000);
        assert_eq!(a.entries.len(), b.entries.len());
        let paths = |r: &Rootfs| -> Vec<String> {
            r.entries
                .iter()
                .map(|e| match e {
                    Entry::File { path, .. } | Entry::Symlink { path, .. } => path.clone(),
                })
                .collect()
        };
        assert_eq!(paths(&a), paths(&b));
        assert!(a.entries.iter().any(|e| matches!(e, Entry::Symlink { .. })));
    }
}
