//! `--name value` / `--name=value` flags with environment-variable fallbacks, shared by the
//! harness's subcommands (`demo`, `mint`, `check`, `bench`).

/// Parsed `--name value` flags with environment fallbacks.
pub struct Args {
    flags: Vec<(String, String)>,
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if name == "help" {
                return Err(String::new());
            }
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (
                    name.to_string(),
                    it.next()
                        .ok_or_else(|| format!("--{name} needs a value"))?
                        .clone(),
                ),
            };
            flags.push((name, value));
        }
        Ok(Args { flags })
    }

    /// Every flag as given, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.flags
    }

    pub fn get(&self, name: &str, env: Option<&str>) -> Option<String> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                env.and_then(|e| std::env::var(e).ok())
                    .filter(|v| !v.trim().is_empty())
            })
    }

    pub fn num<T: std::str::FromStr>(
        &self,
        name: &str,
        env: Option<&str>,
        default: T,
    ) -> Result<T, String> {
        match self.get(name, env) {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("--{name}: not a number: {v:?}")),
            None => Ok(default),
        }
    }

    pub fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self
            .flags
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}
