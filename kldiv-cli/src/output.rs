//! Where the command line writes: result files that never replace an input and never stay
//! half-written, and standard output that tolerates a closed pipe.

use kldiv::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Failure;

/// A result file being prepared: checked and created before the job starts (so a bad path
/// fails at once, not after minutes of computing), written to a temporary file beside the
/// target, and renamed into place only when complete. Dropped without [`commit`], it
/// leaves nothing behind.
///
/// [`commit`]: OutputFile::commit
pub struct OutputFile {
    target: PathBuf,
    /// The temporary file, renamed onto `target` by `commit`; empty when writing straight
    /// to a target that is not a regular file (a device such as /dev/stdout, a FIFO).
    tmp: PathBuf,
    file: Option<std::fs::File>,
}

fn out_err(path: &Path, source: std::io::Error) -> Failure {
    Error::Output {
        path: path.to_path_buf(),
        source,
    }
    .into()
}

/// Same file on disk (device and inode), through any links.
#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

impl OutputFile {
    /// Refuse `target` if it is one of `inputs` (also through a symbolic or hard link), then
    /// create the temporary file that will become it.
    pub fn prepare(target: &Path, inputs: &[&Path]) -> Result<Self, Failure> {
        if let Ok(out_meta) = std::fs::metadata(target) {
            for input in inputs {
                if let Ok(in_meta) = std::fs::metadata(input) {
                    if same_file(&out_meta, &in_meta) {
                        return Err(Failure {
                            code: 2,
                            message: format!(
                                "--out {} is the input {}: refusing to overwrite an input",
                                target.display(),
                                input.display()
                            ),
                        });
                    }
                }
            }
            if out_meta.is_dir() {
                return Err(Failure {
                    code: 2,
                    message: format!("--out {} is a directory", target.display()),
                });
            }
            if !out_meta.is_file() {
                // A device or a pipe: written in place (renaming onto it would replace it).
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(target)
                    .map_err(|e| out_err(target, e))?;
                return Ok(OutputFile {
                    target: target.to_path_buf(),
                    tmp: PathBuf::new(),
                    file: Some(file),
                });
            }
        }
        let name = target.file_name().ok_or_else(|| Failure {
            code: 2,
            message: format!("--out {} names no file", target.display()),
        })?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut k = 0u32;
        loop {
            let tmp = dir.join(format!(
                ".{}.kldiv-{}-{k}.tmp",
                name.to_string_lossy(),
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(OutputFile {
                        target: target.to_path_buf(),
                        tmp,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 100 => k += 1,
                Err(e) => return Err(out_err(target, e)),
            }
        }
    }

    /// Write `bytes` through `write`, flush to disk, and move the file into place.
    pub fn commit(
        mut self,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), Failure> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let in_place = self.tmp.as_os_str().is_empty();
        let written = write(&mut w).and_then(|_| w.flush()).and_then(|_| {
            if in_place {
                Ok(())
            } else {
                w.get_ref().sync_all()
            }
        });
        drop(w);
        if let Err(e) = written {
            return Err(out_err(&self.target, e));
        }
        if in_place {
            return Ok(());
        }
        std::fs::rename(&self.tmp, &self.target).map_err(|e| out_err(&self.target, e))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Standard output for reports. A closed pipe (`kldiv … | head`) ends the program quietly,
/// as command-line filters do; any other failure (a full disk) is exit status 1.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure {
            code: 0,
            message: String::new(),
        }),
        Err(e) => Err(Failure {
            code: 1,
            message: format!("cannot write to standard output: {e}"),
        }),
    }
}
