//! `chaosctl`: the command-line client of chaosd.

mod args;
mod clock;
mod demo;
mod dns;
mod doctor;
mod generate;
mod history;
mod http;
mod io;
mod live;
mod output;
mod resource;
mod scenario;
mod schedule;
mod stress;
mod tcp;

use std::process::ExitCode;

use anyhow::Result;
use chaosd::{
    api::{
        FaultSpec, InjectRequest, NetBandwidthParams, NetConnectErrorParams, NetCorruptParams,
        NetDelayParams, NetDuplicateParams, NetLossParams, NetPartitionParams,
    },
    client::Client,
};
use clap::Parser;

use crate::args::{Cli, Command, InjectKind, NetFault};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaosctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.socket);
    let json = cli.json;
    match cli.command {
        Command::Inject { kind } => inject(&client, *kind, json).await,
        Command::List { all } => {
            let faults = client.list(all).await?;
            if json {
                print_json(&faults)
            } else {
                output::fault_table(&faults)
            }
            Ok(())
        }
        Command::Show { id } => {
            let f = client.get(&id).await?;
            if json {
                print_json(&f)
            } else {
                output::fault_detail(&f)
            }
            Ok(())
        }
        Command::Recover { id, all } => {
            let ended = match (id, all) {
                (_, true) => client.recover_all().await?,
                (Some(id), false) => vec![client.recover(&id).await?],
                (None, false) => anyhow::bail!("name a fault id, or --all to recover every fault"),
            };
            if json {
                print_json(&ended)
            } else {
                output::fault_table(&ended)
            }
            Ok(())
        }
        Command::Doctor => doctor::run(&client, json).await,
        Command::History { limit } => history::run(&client, limit, json).await,
        Command::Validate { file } => scenario::validate(&file),
        Command::Run { file, detach } => scenario::run(&client, &file, json, detach).await,
        Command::Runs => scenario::runs(&client, json).await,
        Command::Report {
            id,
            html: true,
            output,
            ..
        } => scenario::report_html(&client, &id, output).await,
        Command::Report { id, format, .. } => scenario::report(&client, &id, format, json).await,
        Command::Schedule { command } => schedule::run(&client, command, json).await,
        Command::Completions { shell } => generate::completions(shell, &mut std::io::stdout()),
        Command::Man { out_dir } => generate::man_pages(&out_dir),
        Command::Status => {
            let s = client.status().await?;
            if json {
                print_json(&s)
            } else {
                output::status(&s)
            }
            Ok(())
        }
        Command::Demo => demo::run(&client).await,
        Command::UdpSend { to, count, tag } => Ok(demo::send_datagrams(to, tag, count)?),
    }
}

async fn inject(client: &Client, kind: InjectKind, json: bool) -> Result<()> {
    let (fault, common) = match kind {
        InjectKind::Stress { fault } => stress::stress_spec(fault),
        InjectKind::Disk { fault } => stress::disk_spec(fault),
        InjectKind::Process { fault } => stress::process_spec(fault),
        InjectKind::Io { fault } => fault.into_spec(),
        InjectKind::Cpu { fault } => fault.into_spec(),
        InjectKind::Mem { fault } => fault.into_spec(),
        InjectKind::Fd { fault } => fault.into_spec(),
        InjectKind::Clock { fault } => fault.into_spec(),
        InjectKind::Tcp { fault } => fault.into_spec(),
        InjectKind::Http { fault } => fault.into_spec(),
        InjectKind::Dns { fault } => fault.into_spec(),
        InjectKind::Net { fault } => match fault {
            NetFault::Loss {
                percent,
                direction,
                filter,
                common,
            } => (
                FaultSpec::NetLoss(NetLossParams {
                    percent,
                    direction,
                    filter: filter.to_filter(),
                }),
                common,
            ),
            NetFault::Partition { filter, common } => (
                FaultSpec::NetPartition(NetPartitionParams {
                    filter: filter.to_filter(),
                }),
                common,
            ),
            NetFault::Delay {
                delay,
                jitter,
                netns,
                filter,
                common,
            } => (
                FaultSpec::NetDelay(NetDelayParams {
                    delay,
                    jitter,
                    filter: filter.to_filter(),
                    netns: netns.netns,
                }),
                common,
            ),
            NetFault::Bandwidth {
                rate,
                burst,
                netns,
                filter,
                common,
            } => (
                FaultSpec::NetBandwidth(NetBandwidthParams {
                    rate,
                    burst,
                    filter: filter.to_filter(),
                    netns: netns.netns,
                }),
                common,
            ),
            NetFault::Corrupt {
                percent,
                payload,
                filter,
                common,
            } => (
                FaultSpec::NetCorrupt(NetCorruptParams {
                    percent,
                    payload,
                    filter: filter.to_filter(),
                }),
                common,
            ),
            NetFault::Duplicate {
                percent,
                filter,
                common,
            } => (
                FaultSpec::NetDuplicate(NetDuplicateParams {
                    percent,
                    filter: filter.to_filter(),
                }),
                common,
            ),
            NetFault::ConnectError {
                errno,
                percent,
                filter,
                common,
            } => (
                FaultSpec::NetConnectError(NetConnectErrorParams {
                    errno,
                    percent,
                    filter: filter.to_filter(),
                }),
                common,
            ),
        },
    };
    let req = InjectRequest {
        fault,
        targets: common.targets(),
        duration: common.duration.clone(),
    };
    if common.dry_run {
        let plan = client.dry_run(&req).await?;
        if json {
            print_json(&plan);
        } else {
            output::dry_run(&plan);
        }
        return Ok(());
    }
    let info = client.inject(&req).await?;
    if json {
        print_json(&info);
    } else {
        println!(
            "injected {} {} (expires {})",
            info.kind, info.id, info.expires_at
        );
        for ns in &info.netns {
            println!("in network namespace {ns}");
        }
    }
    Ok(())
}

fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("API types serialise")
    );
}
