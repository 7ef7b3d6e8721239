use clap::{Parser, Subcommand};

/// fulfillment-operator scales message brokers and their worker fleets together from a
/// weighted load score read from Prometheus.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the FulfillmentPlan CustomResourceDefinition as YAML (what `crds/` ships).
    Crd,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", fulfillment_operator::plan::crd_yaml()),
    }
}
