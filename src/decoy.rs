//! `firebreak decoy create|delete`: a decoy instance to rehearse on, in a
//! sandbox. What `create` made is kept in the state directory
//! (`decoys/INSTANCE.json`), so `delete --instance` finds all of it.

use clap::{Args, Subcommand};
use firebreak_steps::sandbox::decoy::{create, delete, Decoy, DecoySpec};
use firebreak_steps::Mode;

use crate::session::confirm_sandbox;
use crate::session::Session;
use crate::summary::OutputFormat;
use crate::{exit, AwsArgs, BadInput};

#[derive(Debug, Args)]
pub(crate) struct DecoyArgs {
    #[command(subcommand)]
    pub command: DecoyCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DecoyCommand {
    /// Create a decoy: its own VPC (with IPv6), an open security group, two
    /// network interfaces, two volumes and an instance profile.
    Create {
        /// Name tag prefix of the decoy's resources.
        #[arg(long, default_value = "firebreak-decoy")]
        name: String,
        /// AMI to launch (default: the newest Amazon x86_64 image).
        #[arg(long)]
        image_id: Option<String>,
        /// Confirms the account is a sandbox (not needed against a local
        /// sandbox endpoint).
        #[arg(long, value_name = "ACCOUNT_ID")]
        sandbox_account: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Delete a decoy and everything `decoy create` made for it.
    Delete {
        /// The decoy's instance (as `decoy create` printed it; what was
        /// made is read from the state directory).
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        instance: Option<String>,
        /// The JSON `decoy create --output json` printed.
        #[arg(long, value_name = "FILE")]
        from: Option<std::path::PathBuf>,
        /// Confirms the account is a sandbox (not needed against a local
        /// sandbox endpoint).
        #[arg(long, value_name = "ACCOUNT_ID")]
        sandbox_account: Option<String>,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

/// Where `decoy create` keeps what it made.
fn saved(instance: &str) -> std::path::PathBuf {
    crate::session::state_dir()
        .join("decoys")
        .join(format!("{instance}.json"))
}

/// Keeps what `decoy create` made, for `decoy delete --instance`.
pub(crate) fn save(decoy: &Decoy) -> anyhow::Result<()> {
    let path = saved(&decoy.instance_id);
    if let Some(dir) = path.parent() {
        crate::session::private_dir(dir)?;
    }
    crate::session::write_private(&path, serde_json::to_string_pretty(decoy)?.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// What `decoy delete` deletes: the saved record of a decoy, or a file.
fn load(instance: Option<&str>, from: Option<&std::path::Path>) -> anyhow::Result<Decoy> {
    let path = match (instance, from) {
        (_, Some(f)) => f.to_path_buf(),
        (Some(i), None) => {
            if !i.starts_with("i-") || i.contains('/') {
                return Err(BadInput(format!("{i:?} is not an instance id (i-...)")).into());
            }
            saved(i)
        }
        (None, None) => return Err(BadInput("give --instance or --from".into()).into()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BadInput(format!(
            "cannot read {} ({e}): delete a decoy with the JSON `decoy create --output json` printed (--from FILE)",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| BadInput(format!("{} is not a decoy's JSON: {e}", path.display())).into())
}

pub(crate) async fn run(args: DecoyArgs) -> anyhow::Result<u8> {
    match args.command {
        DecoyCommand::Create {
            name,
            image_id,
            sandbox_account,
            output,
            aws,
        } => {
            let session = Session::open(&aws, Mode::Live, true).await?;
            confirm_sandbox(&session, sandbox_account.as_deref())?;
            let config = session.config.clone();
            let spec = DecoySpec {
                name,
                image_id,
                ..DecoySpec::default()
            };
            let decoy = create(&config, &spec).await.map_err(anyhow::Error::new)?;
            if let Err(e) = save(&decoy) {
                say!("firebreak: warning: {e:#}; delete the decoy with `firebreak decoy delete --from FILE` and its JSON (--output json)");
            }
            match output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&decoy)?),
                OutputFormat::Human => {
                    outln!("decoy {} made:", decoy.instance_id);
                    // Every field, so nothing made goes unsaid.
                    if let serde_json::Value::Object(fields) = serde_json::to_value(&decoy)? {
                        for (k, v) in fields.iter().filter(|(_, v)| !v.is_null()) {
                            outln!("  {k}: {}", firebreak_steps::sandbox::rehearsal::plain(v));
                        }
                    }
                    outln!(
                        "delete it with: firebreak decoy delete --instance {}",
                        decoy.instance_id
                    );
                }
            }
            Ok(exit::OK)
        }
        DecoyCommand::Delete {
            instance,
            from,
            sandbox_account,
            aws,
        } => {
            let decoy = load(instance.as_deref(), from.as_deref())?;
            let session = Session::open(&aws, Mode::Live, true).await?;
            confirm_sandbox(&session, sandbox_account.as_deref())?;
            let (done, failed) = delete(&session.config, &decoy, None).await;
            for d in &done {
                outln!("deleted {d}");
            }
            for f in &failed {
                say!("firebreak: not deleted: {f}");
            }
            if failed.is_empty() {
                let _ = std::fs::remove_file(saved(&decoy.instance_id));
                Ok(exit::OK)
            } else {
                Ok(exit::FAILED)
            }
        }
    }
}
