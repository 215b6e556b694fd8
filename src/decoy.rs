//! `firebreak decoy create`: a decoy instance to rehearse on, in a sandbox.

use clap::{Args, Subcommand};
use firebreak_steps::decoy::{create, DecoySpec};
use firebreak_steps::Mode;

use crate::rehearse::confirm_sandbox;
use crate::respond::OutputFormat;
use crate::session::Session;
use crate::{exit, AwsArgs};

#[derive(Debug, Args)]
pub struct DecoyArgs {
    #[command(subcommand)]
    pub command: DecoyCommand,
}

#[derive(Debug, Subcommand)]
pub enum DecoyCommand {
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
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

pub async fn run(args: DecoyArgs) -> anyhow::Result<u8> {
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
            let decoy = create(&config, &spec)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&decoy)?),
                OutputFormat::Human => outln!(
                    "decoy {} in {} (subnet {}, group {}): interfaces {}, volumes {}, instance profile {}",
                    decoy.instance_id,
                    decoy.vpc_id,
                    decoy.subnet_id,
                    decoy.security_group_id,
                    decoy.network_interface_ids.join(","),
                    decoy.volume_ids.join(","),
                    decoy.instance_profile_name.as_deref().unwrap_or("none")
                ),
            }
            Ok(exit::OK)
        }
    }
}
