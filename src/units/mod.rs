//! systemd units from Quadlet `.container` files: the parser and the unit writer used by
//! `berth-generator` (a systemd generator, so no D-Bus and nothing that blocks here).

mod parse;
mod quadlet;

use std::path::{Path, PathBuf};

pub use parse::{parse_duration, quote_word, split_words, Entry, Section, SyntaxError, UnitFile};
pub use quadlet::{generate, GeneratedUnit, QuadletError, CONTAINER_KEYS};

/// Where `.container` files are read from, first match of a file name wins (Quadlet's
/// order: the administrator's directory shadows the distribution's).
pub const SEARCH_DIRS: &[&str] = &["/etc/berth/systemd", "/usr/share/berth/systemd"];

/// What one run of the generator did: the units written, and one line per file that
/// produced none.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub failures: Vec<String>,
}

/// Writes a unit into `output` for every `.container` file in `dirs`, with its
/// `.wants`/`.requires` links and aliases. A file with an error yields no unit and one
/// line in the report; the others still generate.
pub fn generate_all(dirs: &[PathBuf], output: &Path, berthctl: &Path) -> Report {
    let mut report = Report::default();
    let mut seen = std::collections::HashSet::new();
    for dir in dirs {
        let Ok(read) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "container"))
            .collect();
        files.sort();
        for file in files {
            let Some(name) = file.file_name().map(|n| n.to_os_string()) else {
                continue;
            };
            if !seen.insert(name) {
                continue;
            }
            match write_one(&file, output, berthctl) {
                Ok(path) => report.written.push(path),
                Err(reason) => report
                    .failures
                    .push(format!("{}: {reason}; no unit generated", file.display())),
            }
        }
    }
    report
}

fn write_one(file: &Path, output: &Path, berthctl: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read it: {e}"))?;
    let unit = generate(file, &text, berthctl).map_err(|e| e.to_string())?;
    let path = output.join(&unit.unit_name);
    let io = |what: &str, e: std::io::Error| format!("cannot write {what}: {e}");
    std::fs::write(&path, &unit.text).map_err(|e| io(&path.display().to_string(), e))?;
    for (directory, name) in &unit.links {
        let dir = output.join(directory);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir.display().to_string(), e))?;
        symlink(&PathBuf::from("..").join(&unit.unit_name), &dir.join(name))
            .map_err(|e| io(directory, e))?;
    }
    for alias in &unit.aliases {
        symlink(Path::new(&unit.unit_name), &output.join(alias)).map_err(|e| io(alias, e))?;
    }
    Ok(path)
}

fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, link)
}
