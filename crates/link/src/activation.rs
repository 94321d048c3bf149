//! An environment's `variables:`, set when it is activated. conda runs the
//! scripts in `etc/conda/activate.d` on `conda activate` and those in
//! `etc/conda/deactivate.d` on `conda deactivate`, picking them by the
//! shell's extension; deactivation puts back what the variable held before.

use std::collections::BTreeMap;
use std::path::Path;

use rattler_conda_types::Subdir;

use crate::prefix::PrefixError;

/// The scripts' file name, without extension, in both folders.
pub const SCRIPT_NAME: &str = "envstore-variables";

/// Writes the activation and deactivation scripts for the shells of
/// `platform`; nothing when there are no variables. Names and values were
/// checked when the spec was parsed (names are identifiers, values hold no
/// control characters), and every value is quoted for its shell here.
pub fn write_activation_scripts(
    prefix: &Path,
    platform: Subdir,
    variables: &BTreeMap<String, String>,
) -> Result<(), PrefixError> {
    if variables.is_empty() {
        return Ok(());
    }
    let scripts: Vec<(&str, String, String)> = if platform.is_windows() {
        vec![
            ("bat", batch_activate(variables), batch_deactivate(variables)),
            ("ps1", powershell_activate(variables), powershell_deactivate(variables)),
        ]
    } else {
        vec![
            ("sh", posix_activate(variables), posix_deactivate(variables)),
            ("fish", fish_activate(variables), fish_deactivate(variables)),
        ]
    };
    for (folder, pick) in [("activate.d", 1), ("deactivate.d", 2)] {
        let dir = prefix.join("etc/conda").join(folder);
        std::fs::create_dir_all(&dir).map_err(PrefixError::io("create", &dir))?;
        for (extension, activate, deactivate) in &scripts {
            let path = dir.join(format!("{SCRIPT_NAME}.{extension}"));
            let text = if pick == 1 { activate } else { deactivate };
            std::fs::write(&path, text).map_err(PrefixError::io("write", &path))?;
        }
    }
    Ok(())
}

const HEADER: &str = "envstore: the environment's `variables:`";

/// Where a variable's earlier value is kept while the environment is active.
fn backup(name: &str) -> String {
    format!("_ENVSTORE_BACKUP_{name}")
}

fn posix_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn posix_activate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("# {HEADER}, set on activation.\n");
    for (name, value) in variables {
        let backup = backup(name);
        script.push_str(&format!(
            "if [ -n \"${{{name}+x}}\" ]; then export {backup}=\"${name}\"; fi\nexport {name}={}\n",
            posix_quote(value)
        ));
    }
    script
}

fn posix_deactivate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("# {HEADER}, restored on deactivation.\n");
    for name in variables.keys() {
        let backup = backup(name);
        script.push_str(&format!(
            "if [ -n \"${{{backup}+x}}\" ]; then export {name}=\"${backup}\"; unset {backup}; else unset {name}; fi\n"
        ));
    }
    script
}

fn fish_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

fn fish_activate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("# {HEADER}, set on activation.\n");
    for (name, value) in variables {
        let backup = backup(name);
        script.push_str(&format!(
            "if set -q {name}; set -gx {backup} ${name}; end\nset -gx {name} {}\n",
            fish_quote(value)
        ));
    }
    script
}

fn fish_deactivate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("# {HEADER}, restored on deactivation.\n");
    for name in variables.keys() {
        let backup = backup(name);
        script.push_str(&format!(
            "if set -q {backup}; set -gx {name} ${backup}; set -e {backup}; else; set -e {name}; end\n"
        ));
    }
    script
}

/// cmd.exe: `%` must be doubled in a script; `SET "NAME=value"` takes
/// everything up to the line's last quote, so the rest needs no escaping.
fn batch_activate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("@REM {HEADER}, set on activation.\r\n");
    for (name, value) in variables {
        let backup = backup(name);
        script.push_str(&format!(
            "@IF DEFINED {name} @SET \"{backup}=%{name}%\"\r\n@SET \"{name}={}\"\r\n",
            value.replace('%', "%%")
        ));
    }
    script
}

fn batch_deactivate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("@REM {HEADER}, restored on deactivation.\r\n");
    for name in variables.keys() {
        let backup = backup(name);
        script.push_str(&format!(
            "@IF DEFINED {backup} (@SET \"{name}=%{backup}%\" & @SET \"{backup}=\") ELSE (@SET \"{name}=\")\r\n"
        ));
    }
    script
}

fn powershell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn powershell_activate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("# {HEADER}, set on activation.\r\n");
    for (name, value) in variables {
        let backup = backup(name);
        script.push_str(&format!(
            "if (Test-Path Env:{name}) {{ $Env:{backup} = $Env:{name} }}\r\n$Env:{name} = {}\r\n",
            powershell_quote(value)
        ));
    }
    script
}

fn powershell_deactivate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("# {HEADER}, restored on deactivation.\r\n");
    for name in variables.keys() {
        let backup = backup(name);
        script.push_str(&format!(
            "if (Test-Path Env:{backup}) {{ $Env:{name} = $Env:{backup}; Remove-Item Env:{backup} }} else {{ Remove-Item Env:{name} -ErrorAction SilentlyContinue }}\r\n"
        ));
    }
    script
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn variables() -> BTreeMap<String, String> {
        [
            ("PLAIN".to_owned(), "value".to_owned()),
            ("TRICKY".to_owned(), "it's $HOME `id` \"q\" \\ * ;".to_owned()),
        ]
        .into()
    }

    #[test]
    fn posix_scripts_set_and_restore_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        write_activation_scripts(dir.path(), Subdir::Linux64, &variables()).unwrap();
        let activate = dir.path().join("etc/conda/activate.d/envstore-variables.sh");
        let deactivate = dir.path().join("etc/conda/deactivate.d/envstore-variables.sh");
        assert!(dir.path().join("etc/conda/activate.d/envstore-variables.fish").is_file());
        let script = format!(
            ". '{}'; printf '%s|%s\\n' \"$PLAIN\" \"$TRICKY\"; . '{}'; printf '%s|%s\\n' \"$PLAIN\" \"${{TRICKY-unset}}\"",
            activate.display(),
            deactivate.display()
        );
        let output = Command::new("sh").arg("-c").arg(&script).env("PLAIN", "before").env_remove("TRICKY").output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            "value|it's $HOME `id` \"q\" \\ * ;\nbefore|unset\n",
            "set on activation, put back (or unset) on deactivation"
        );
    }

    #[test]
    fn windows_prefixes_get_cmd_and_powershell_scripts_and_no_variables_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_activation_scripts(dir.path(), Subdir::Win64, &variables()).unwrap();
        let bat = std::fs::read_to_string(dir.path().join("etc/conda/activate.d/envstore-variables.bat")).unwrap();
        assert!(bat.contains("@SET \"PLAIN=value\""), "{bat}");
        let ps1 = std::fs::read_to_string(dir.path().join("etc/conda/activate.d/envstore-variables.ps1")).unwrap();
        assert!(ps1.contains("$Env:TRICKY = 'it''s $HOME"), "{ps1}");
        assert!(!dir.path().join("etc/conda/activate.d/envstore-variables.sh").exists());

        let empty = tempfile::tempdir().unwrap();
        write_activation_scripts(empty.path(), Subdir::Linux64, &BTreeMap::new()).unwrap();
        assert!(!empty.path().join("etc").exists());
    }
}
