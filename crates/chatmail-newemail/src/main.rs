use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// CGI program (for nginx + fcgiwrap) that prints a random new address and
/// password as JSON; the account is created when a client first logs in.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The relay's chatmail.ini (a CGI program gets no arguments: nginx
    /// names it in the CHATMAIL_INI parameter, which fcgiwrap passes on).
    #[arg(env = "CHATMAIL_INI", default_value = chatmail_config::DEFAULT_CONFIG_PATH)]
    config_path: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let response = match chatmail_config::Config::load(&cli.config_path) {
        Ok(config) => {
            chatmail_newemail::NewAccount::generate(&config, &mut rand::rng()).cgi_response()
        }
        Err(err) => {
            eprintln!("chatmail-newemail: {err}");
            "Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nrelay misconfigured\n"
                .to_owned()
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(response.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
