use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("version") => {
            println!(
                "ssh-gateway-helper {} {}",
                sgw_helper::PROTOCOL,
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", sgw_helper::USAGE);
            ExitCode::from(2)
        }
    }
}
