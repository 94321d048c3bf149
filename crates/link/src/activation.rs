//! An environment's `variables:`, set when it is activated. conda runs the
//! scripts in `etc/conda/activate.d` on `conda activate` and those in
//! `etc/conda/deactivate.d` on `conda deactivate`, picking them by the
//! shell's extension; deactivation puts back what the variable held before.

use std::collections::BTreeMap;
use std::path::Path;

use rattler_conda_types::Subdir;

use crate::error::PrefixError;

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
            (
                "bat",
                batch_activate(variables),
                batch_deactivate(variables),
            ),
            (
                "ps1",
                powershell_activate(variables),
                powershell_deactivate(variables),
            ),
        ]
    } else {
        vec![
            ("sh", posix_activate(variables), posix_deactivate(variables)),
            ("fish", fish_activate(variables), fish_deactivate(variables)),
        ]
    };
    for (folder, pick) in [("activate.d", 1), ("deactivate.d", 2)] {
        let dir = prefix.join("etc/conda").join(folder);
        fs_err::create_dir_all(&dir).map_err(PrefixError::io("create", &dir))?;
        for (extension, activate, deactivate) in &scripts {
            let path = dir.join(format!("{SCRIPT_NAME}.{extension}"));
            let text = if pick == 1 { activate } else { deactivate };
            // Windows PowerShell 5.1 reads a script without a byte order mark
            // in the ANSI code page, where the UTF-8 bytes of e.g. `ё` (D1 91)
            // read as `Ñ‘`, and `‘` ends a single-quoted string.
            let bom: &[u8] = if *extension == "ps1" {
                b"\xEF\xBB\xBF"
            } else {
                b""
            };
            let bytes = [bom, text.as_bytes()].concat();
            fs_err::write(&path, bytes).map_err(PrefixError::io("write", &path))?;
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

/// A value for an unquoted `SET NAME=value` line of a batch file. cmd.exe
/// expands `%` before anything else, so it is doubled; then it splits
/// commands at `&`, `|`, `<`, `>` and toggles quoting at `"`, so each of
/// those (and `^`, `(`, `)`) gets a caret, which makes it a plain character.
/// A quoted `SET "NAME=value"` cannot carry a `"`: the quote would end the
/// quoting and a following `&` would start a command.
fn batch_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 8);
    for character in value.chars() {
        match character {
            '%' => quoted.push_str("%%"),
            '^' | '&' | '|' | '<' | '>' | '(' | ')' | '"' => {
                quoted.push('^');
                quoted.push(character);
            }
            other => quoted.push(other),
        }
    }
    quoted
}

/// Copies a variable's current value into another without `%name%`, which
/// cmd.exe expands before parsing the line: a value holding `"&…` would run
/// as a command. `SET name` prints `name=value`, and a `FOR` variable is
/// substituted after parsing, so the value is never parsed.
fn batch_copy(from: &str, to: &str) -> String {
    format!(
        "@FOR /F \"tokens=1* delims==\" %%A IN ('SET {from} 2^>NUL') DO @IF /I \"%%A\"==\"{from}\" @SET \"{to}=%%B\"\r\n"
    )
}

fn batch_activate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("@REM {HEADER}, set on activation.\r\n");
    for (name, value) in variables {
        let backup = backup(name);
        script.push_str(&format!("@SET \"{backup}=\"\r\n"));
        script.push_str(&batch_copy(name, &backup));
        script.push_str(&format!("@SET {name}={}\r\n", batch_quote(value)));
    }
    script
}

fn batch_deactivate(variables: &BTreeMap<String, String>) -> String {
    let mut script = format!("@REM {HEADER}, restored on deactivation.\r\n");
    for name in variables.keys() {
        let backup = backup(name);
        script.push_str(&format!("@SET \"{name}=\"\r\n"));
        script.push_str(&batch_copy(&backup, name));
        script.push_str(&format!("@SET \"{backup}=\"\r\n"));
    }
    script
}

/// PowerShell ends a single-quoted string at any of four quote characters:
/// `'` and the typographic `‘`, `’`, `‚`, `‛`. Each is escaped by doubling.
fn powershell_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for character in value.chars() {
        if matches!(
            character,
            '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}'
        ) {
            quoted.push(character);
        }
        quoted.push(character);
    }
    quoted.push('\'');
    quoted
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
            (
                "TRICKY".to_owned(),
                "it's $HOME `id` \"q\" \\ * ;".to_owned(),
            ),
        ]
        .into()
    }

    #[test]
    fn posix_scripts_set_and_restore_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        write_activation_scripts(dir.path(), Subdir::Linux64, &variables()).unwrap();
        let activate = dir
            .path()
            .join("etc/conda/activate.d/envstore-variables.sh");
        let deactivate = dir
            .path()
            .join("etc/conda/deactivate.d/envstore-variables.sh");
        assert!(
            dir.path()
                .join("etc/conda/activate.d/envstore-variables.fish")
                .is_file()
        );
        let script = format!(
            ". '{}'; printf '%s|%s\\n' \"$PLAIN\" \"$TRICKY\"; . '{}'; printf '%s|%s\\n' \"$PLAIN\" \"${{TRICKY-unset}}\"",
            activate.display(),
            deactivate.display()
        );
        let output = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PLAIN", "before")
            .env_remove("TRICKY")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
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
        let bat = fs_err::read_to_string(
            dir.path()
                .join("etc/conda/activate.d/envstore-variables.bat"),
        )
        .unwrap();
        assert!(bat.contains("@SET PLAIN=value\r\n"), "{bat}");
        let ps1 = fs_err::read(
            dir.path()
                .join("etc/conda/activate.d/envstore-variables.ps1"),
        )
        .unwrap();
        assert!(
            ps1.starts_with(b"\xEF\xBB\xBF"),
            "a UTF-8 byte order mark, so PowerShell 5.1 reads UTF-8"
        );
        let ps1 = String::from_utf8(ps1).unwrap();
        assert!(ps1.contains("$Env:TRICKY = 'it''s $HOME"), "{ps1}");
        assert!(
            !dir.path()
                .join("etc/conda/activate.d/envstore-variables.sh")
                .exists()
        );

        let empty = tempfile::tempdir().unwrap();
        write_activation_scripts(empty.path(), Subdir::Linux64, &BTreeMap::new()).unwrap();
        assert!(!empty.path().join("etc").exists());
    }

    /// Values that break out of a naive quoting in cmd.exe or PowerShell.
    const HOSTILE: &[&str] = &[
        "x\"&calc&\"y",
        "\" & calc & \"",
        "a\"|calc|\"b",
        "100% & %PATH% %%",
        "^&calc",
        "(x) | y > z < w",
        "trailing caret ^",
        "\"\"",
        "it's",
        "\u{2019};calc;\u{2019}",
        "\u{2018}x\u{2018} \u{201A}y\u{201B} '",
        "\u{451} and \u{2019}'\u{2019}'",
        "!PATH! $HOME `id` $(calc)",
    ];

    /// cmd.exe's reading of one line of a batch file, as far as quoting goes:
    /// `%%` becomes `%` (a lone `%` would expand a variable); outside quotes
    /// `^` makes the next character plain, `"` starts quoting, and `&`, `|`,
    /// `<`, `>` end the command (inside quotes, only `"` matters). Returns
    /// the line's commands, carets removed.
    fn cmd_commands(line: &str) -> Result<Vec<String>, String> {
        let mut expanded = String::new();
        let mut characters = line.chars().peekable();
        while let Some(character) = characters.next() {
            if character == '%' && characters.next_if_eq(&'%').is_none() {
                return Err(format!("a lone % expands a variable: {line}"));
            }
            expanded.push(character);
        }
        let (mut commands, mut current, mut quoted) = (Vec::new(), String::new(), false);
        let mut characters = expanded.chars();
        while let Some(character) = characters.next() {
            match character {
                '"' => {
                    quoted = !quoted;
                    current.push(character);
                }
                '^' if !quoted => current.extend(characters.next()),
                '&' | '|' | '<' | '>' if !quoted => commands.push(std::mem::take(&mut current)),
                other => current.push(other),
            }
        }
        commands.push(current);
        Ok(commands)
    }

    /// PowerShell's reading of `$Env:NAME = '…'`: the string's value, and
    /// what follows it on the line.
    fn powershell_string(line: &str) -> (String, String) {
        let is_quote =
            |c: char| matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}');
        let start = line.find(" = ").unwrap() + 3;
        let mut characters = line[start..].chars().peekable();
        assert!(characters.next().is_some_and(is_quote), "{line}");
        let mut value = String::new();
        while let Some(character) = characters.next() {
            if is_quote(character) {
                match characters.next_if(|next| is_quote(*next)) {
                    Some(_) => value.push(character),
                    None => return (value, characters.collect()),
                }
            } else {
                value.push(character);
            }
        }
        (value, String::new())
    }

    #[test]
    fn cmd_reads_every_hostile_value_back_as_one_set_command() {
        for value in HOSTILE {
            let script = batch_activate(&[("NAME".to_owned(), (*value).to_owned())].into());
            let line = script
                .lines()
                .find(|line| line.starts_with("@SET NAME="))
                .unwrap();
            let commands = cmd_commands(line).unwrap_or_else(|error| panic!("{value}: {error}"));
            assert_eq!(
                commands,
                vec![format!("@SET NAME={value}")],
                "{value:?} rendered as {line:?}"
            );
            for line in script
                .lines()
                .chain(batch_deactivate(&[("NAME".to_owned(), String::new())].into()).lines())
            {
                assert!(
                    !line.contains("%NAME%") && !line.contains("%_ENVSTORE"),
                    "no %expansion% of values: {line}"
                );
            }
        }
    }

    #[test]
    fn powershell_reads_every_hostile_value_back_exactly() {
        for value in HOSTILE {
            let script = powershell_activate(&[("NAME".to_owned(), (*value).to_owned())].into());
            let line = script
                .lines()
                .find(|line| line.starts_with("$Env:NAME = "))
                .unwrap();
            let (read, rest) = powershell_string(line);
            assert_eq!(
                (read.as_str(), rest.trim_end()),
                (*value, ""),
                "{value:?} rendered as {line:?}"
            );
        }
    }
}
