//! How to launch a planned layout: the `mpirun ... swallow train ...` line and the job-script
//! variables (jobscripts/README.md) that run it, printed under `swallow plan`. The layout's
//! settings become `swallow train` flags; the plan's other settings (`--global-batch`,
//! `--seq-len`, `--set`) follow as `--set`. The job scripts' layouts table is read from the
//! checkout this binary was built from (jobscripts/layouts, the one table).

use super::Layout;
use crate::config::Config;

/// The job scripts' layouts: `name config gpus tp pp` per line.
const JOB_LAYOUTS: &str = include_str!("../../jobscripts/layouts");

/// Config keys the layout sets; a plan's own `--set` of one of them is superseded by the layout.
const LAYOUT_KEYS: [&str; 8] = [
    "parallel.tp",
    "parallel.pp",
    "parallel.vpp",
    "parallel.zero",
    "parallel.sequence_parallel",
    "parallel.schedule",
    "train.micro_batch",
    "train.recompute",
];

/// What a launch line needs besides the layout.
pub struct Launch<'a> {
    /// The preset name or TOML file the plan was given.
    pub config_arg: &'a str,
    /// The plan's configuration (with its settings applied).
    pub cfg: &'a Config,
    /// The plan's settings, `key=value`, in order.
    pub settings: &'a [String],
    pub gpus: usize,
    pub gpus_per_node: usize,
}

impl Launch<'_> {
    /// The plan's settings that the layout does not set, as `--set key=value` pairs.
    fn setting_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.settings {
            let key = s.split('=').next().unwrap_or_default().trim();
            if !LAYOUT_KEYS.contains(&key) {
                out.extend(["--set".to_string(), s.clone()]);
            }
        }
        out
    }

    /// The layout as `swallow train` flags other than `--tp`/`--pp`/`--vpp` (which the job
    /// scripts take as variables), then the plan's own settings.
    fn other_flags(&self, l: &Layout) -> Vec<String> {
        let mut f: Vec<String> = vec![
            "--zero".into(),
            l.zero.to_string(),
            "--micro-batch".into(),
            l.micro_batch.to_string(),
            "--recompute".into(),
            l.recompute.name().into(),
            "--set".into(),
            format!("parallel.sequence_parallel={}", l.sequence_parallel),
        ];
        if self.cfg.parallel.schedule.is_some() || l.schedule != crate::pipeline::ScheduleKind::default_for(l.vpp) {
            f.extend(["--set".into(), format!("parallel.schedule=\"{}\"", l.schedule.name())]);
        }
        f.extend(self.setting_flags());
        f
    }

    /// `mpirun -np N --map-by ppr:G:node swallow train --config C <layout> --device cuda
    /// --data "$DATA" --save "$SAVE" --load auto`.
    pub fn mpirun_line(&self, l: &Layout) -> String {
        let mut args: Vec<String> = vec![
            "mpirun".into(),
            "-np".into(),
            self.gpus.to_string(),
            "--map-by".into(),
            format!("ppr:{}:node", self.gpus_per_node.min(self.gpus)),
            "swallow".into(),
            "train".into(),
            "--config".into(),
            self.config_arg.into(),
            "--tp".into(),
            l.tp.to_string(),
            "--pp".into(),
            l.pp.to_string(),
            "--vpp".into(),
            l.vpp.to_string(),
        ];
        args.extend(self.other_flags(l));
        let mut line = args.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" ");
        line += " --device cuda --data \"$DATA\" --save \"$SAVE\" --load auto";
        line
    }

    /// The job scripts' way: the variables over a layouts line of this config and GPU count
    /// (or the line to add to jobscripts/layouts when there is none).
    pub fn job_script_lines(&self, l: &Layout) -> Vec<String> {
        let mut out = Vec::new();
        let known = JOB_LAYOUTS.lines().filter(|s| !s.trim_start().starts_with('#')).find_map(|s| {
            let w: Vec<&str> = s.split_whitespace().collect();
            (w.len() == 5 && w[1] == self.config_arg && w[2] == self.gpus.to_string()).then(|| w[0].to_string())
        });
        let layout = match known {
            Some(name) => name,
            None => {
                let name = format!("{}-{}", self.config_arg.trim_end_matches(".toml").rsplit('/').next().unwrap_or("run"), self.gpus);
                out.push(format!(
                    "add to jobscripts/layouts: {name} {} {} {} {}{}",
                    self.config_arg,
                    self.gpus,
                    l.tp,
                    l.pp,
                    if self.config_arg.ends_with(".toml") { " (the config's path from the checkout, or copy it to data/configs/)" } else { "" }
                ));
                name
            }
        };
        let mut vars = vec![format!("SWALLOW_TP={}", l.tp), format!("SWALLOW_PP={}", l.pp)];
        if l.vpp > 1 {
            vars.push(format!("SWALLOW_VPP={}", l.vpp));
        }
        vars.push(format!("SWALLOW_GPUS_PER_NODE={}", self.gpus_per_node));
        vars.push(format!("SWALLOW_TRAIN_ARGS={}", shell_word(&self.other_flags(l).join(" "))));
        out.push(format!("{} SWALLOW_DATA=\"$DATA\" jobscripts/submit.sh \"$SCHEDULER\" {layout}", vars.join(" ")));
        out
    }
}

/// `s` as one shell word: unchanged when it holds only safe characters, else single-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_the_shell_would_split_or_expand() {
        assert_eq!(shell_word("train.lr=5e-5"), "train.lr=5e-5");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("x=\"cosine\""), "'x=\"cosine\"'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn the_layouts_table_names_the_preset_or_gets_a_line() {
        let cfg = Config::load("swallow-7b", &[]).unwrap();
        let l = Layout::from_config(&cfg, 32, cfg.train.recompute).unwrap();
        let settings = ["parallel.tp=4".to_string(), "train.lr=1e-4".to_string()];
        let launch = Launch { config_arg: "swallow-7b", cfg: &cfg, settings: &settings, gpus: 32, gpus_per_node: 8 };
        let lines = launch.job_script_lines(&l);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with("jobscripts/submit.sh \"$SCHEDULER\" swallow-7b"), "{lines:?}");
        assert!(lines[0].contains("SWALLOW_TP=2 SWALLOW_PP=2 SWALLOW_GPUS_PER_NODE=8"), "{lines:?}");
        // The layout's own keys are not repeated from the plan's settings; the others are.
        assert!(!launch.mpirun_line(&l).contains("parallel.tp=4") && launch.mpirun_line(&l).contains("--set train.lr=1e-4"));
        let other = Launch { gpus: 48, ..launch };
        let lines = other.job_script_lines(&l);
        assert_eq!(lines[0], "add to jobscripts/layouts: swallow-7b-48 swallow-7b 48 2 2", "{lines:?}");
        assert!(lines[1].ends_with("\" swallow-7b-48"), "{lines:?}");
    }
}
