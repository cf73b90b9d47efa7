//! The four things a board protects (DESIGN.md "What it is").

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    Database,
    Config,
    Logs,
    Application,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Database,
        Strategy::Config,
        Strategy::Logs,
        Strategy::Application,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Database => "database",
            Strategy::Config => "config",
            Strategy::Logs => "logs",
            Strategy::Application => "application",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
