//! weftctl: weft's command-line tool.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("weftctl has no commands yet")
}
