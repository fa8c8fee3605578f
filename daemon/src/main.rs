//! `dsmd`: the dsm daemon.

#[macro_use]
mod ratelimit;
mod config;
mod conn;
mod noise;
mod page_store;
mod peers;
mod server;
mod store;

fn main() {
    let config = match config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dsmd: {e}");
            std::process::exit(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    if let Err(e) = config.validate() {
        eprintln!("dsmd: {e}");
        std::process::exit(2);
    }
    let result = server::Server::bind(config).and_then(|s| s.run());
    if let Err(e) = result {
        // Once, on stderr (where the log goes too).
        eprintln!("dsmd: {e}");
        std::process::exit(1);
    }
}
