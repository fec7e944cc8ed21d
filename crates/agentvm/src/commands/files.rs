//! `agentvm cp`, `agentvm ls`, `agentvm cat`.

use std::io::Write;
use std::path::Path;

use agentvm_client::Client;
use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct CpArgs {
    /// `LOCAL_PATH` or `KEY:/path/in/vm` (`-` for stdin)
    source: String,
    /// `LOCAL_PATH` or `KEY:/path/in/vm` (`-` for stdout); a directory means "into it"
    destination: String,
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// The VM's key
    key: String,
    /// Directory inside the VM
    #[arg(default_value = "/home/user")]
    path: String,
    /// Long listing: type, size and name
    #[arg(short, long)]
    long: bool,
}

#[derive(clap::Args)]
pub struct CatArgs {
    /// The VM's key
    key: String,
    /// File inside the VM
    path: String,
}

/// `KEY:/path` → (key, path). A local path never has a colon before its first slash.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (key, path) = spec.split_once(':')?;
    (!key.is_empty() && !key.contains('/') && path.starts_with('/')).then_some((key, path))
}

pub async fn cp(client: &Client, args: CpArgs) -> anyhow::Result<()> {
    match (remote(&args.source), remote(&args.destination)) {
        (None, Some((key, path))) => {
            let content = if args.source == "-" {
                let mut buffer = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)?;
                buffer
            } else {
                std::fs::read(&args.source).with_context(|| format!("reading {}", args.source))?
            };
            let vm = client.vm(key);
            let mut target = path.to_string();
            if vm.stat(path).await.is_ok_and(|s| s.is_directory) {
                let name = Path::new(&args.source).file_name().context("the source has no file name")?;
                target = format!("{}/{}", path.trim_end_matches('/'), name.to_string_lossy());
            }
            vm.write_file(&target, &content).await.with_context(|| format!("writing {target} in VM {key:?}"))
        }
        (Some((key, path)), None) => {
            let content =
                client.vm(key).read_file(path).await.with_context(|| format!("reading {path} in VM {key:?}"))?;
            if args.destination == "-" {
                std::io::stdout().write_all(&content)?;
                return Ok(());
            }
            let mut target = Path::new(&args.destination).to_path_buf();
            if target.is_dir() {
                target.push(Path::new(path).file_name().context("the source has no file name")?);
            }
            std::fs::write(&target, content).with_context(|| format!("writing {}", target.display()))
        }
        (Some(_), Some(_)) => bail!("both sides are in VMs: copy through the host, or use `exec` inside one VM"),
        (None, None) => bail!("neither side is in a VM: write one side as KEY:/absolute/path"),
    }
}

pub async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let vm = client.vm(&args.key);
    let names = vm.readdir(&args.path).await.with_context(|| format!("listing {} in VM {:?}", args.path, args.key))?;
    for name in names {
        if args.long {
            let full = format!("{}/{name}", args.path.trim_end_matches('/'));
            match vm.stat(&full).await {
                Ok(stat) => {
                    let kind = if stat.is_symbolic_link {
                        'l'
                    } else if stat.is_directory {
                        'd'
                    } else {
                        '-'
                    };
                    println!("{kind}{:o} {:>10} {name}", stat.mode & 0o7777, stat.size);
                }
                Err(_) => println!("? {:>15} {name}", "?"),
            }
        } else {
            println!("{name}");
        }
    }
    Ok(())
}

pub async fn cat(client: &Client, args: CatArgs) -> anyhow::Result<()> {
    let content = client
        .vm(&args.key)
        .read_file(&args.path)
        .await
        .with_context(|| format!("reading {} in VM {:?}", args.path, args.key))?;
    let mut out = std::io::stdout();
    out.write_all(&content)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::remote;

    #[test]
    fn remote_specs() {
        assert_eq!(remote("demo:/home/user/a"), Some(("demo", "/home/user/a")));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/x"), None);
        assert_eq!(remote("demo:relative"), None);
    }
}
