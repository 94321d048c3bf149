//! Activation variables that steer how programs load code. An environment's
//! `variables:` are set in the shell of everyone who activates it and in
//! every kernel started from it; a developer who could set `LD_PRELOAD` or
//! `PYTHONSTARTUP` there would run code of their choosing in other people's
//! processes. Such names are refused unless the server policy allows them by
//! name (`allowed_variables`).

/// Prefixes of names that steer a loader, an interpreter or a tool that
/// runs other programs. Compared in upper case: Windows names ignore case.
const STEERING_PREFIXES: &[&str] = &[
    "LD_",      // the dynamic loader: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT
    "DYLD_",    // its macOS counterpart
    "GLIBC_",   // GLIBC_TUNABLES
    "MALLOC_",  // allocator hooks
    "GCONV_",   // iconv modules
    "PYTHON",   // PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, PYTHONWARNINGS, … (harmless ones below)
    "PERL",     // PERL5LIB, PERL5OPT, PERLLIB
    "RUBY",     // RUBYLIB, RUBYOPT
    "NODE_",    // NODE_OPTIONS, NODE_PATH
    "JULIA_",   // JULIA_LOAD_PATH, JULIA_DEPOT_PATH
    "LUA_",     // LUA_PATH, LUA_CPATH, LUA_INIT
    "R_",       // R_PROFILE, R_ENVIRON, R_LIBS
    "BASH_",    // BASH_ENV, BASH_FUNC_*
    "JUPYTER_", // JUPYTER_PATH, JUPYTER_CONFIG_DIR
    "IPYTHON",  // IPYTHONDIR
    "GIT_",     // GIT_SSH_COMMAND, GIT_EXEC_PATH, GIT_CONFIG_*
    "XDG_",     // where tools read their configuration
];

/// Names that steer on their own.
const STEERING_NAMES: &[&str] = &[
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    "IFS",
    "CDPATH",
    "HOME",
    "TMPDIR",
    "CLASSPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "NLSPATH",
    "LOCPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "TCL_LIBRARY",
    "TK_LIBRARY",
    "TCLLIBPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "MPLBACKEND",
    "MPLCONFIGDIR",
    "PSMODULEPATH",
    "COMSPEC",
    "PATHEXT",
];

/// `PYTHON…` names that only tune the interpreter and load nothing.
const HARMLESS_PYTHON: &[&str] = &[
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONFAULTHANDLER",
    "PYTHONOPTIMIZE",
];

/// Whether a variable of this name steers how programs find or load code,
/// which no environment may set unless the server policy names it.
pub fn is_steering(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if HARMLESS_PYTHON.contains(&upper.as_str()) {
        return false;
    }
    STEERING_NAMES.contains(&upper.as_str())
        || STEERING_PREFIXES
            .iter()
            .any(|prefix| upper.starts_with(prefix))
}

/// Whether `name` may be set, given the names the policy allows (compared
/// exactly: allowing `LD_LIBRARY_PATH` allows nothing else).
pub fn is_allowed(name: &str, allowed: &[String]) -> bool {
    !is_steering(name) || allowed.iter().any(|allowed| allowed == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_and_interpreter_variables_steer() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "ld_preload",
            "DYLD_INSERT_LIBRARIES",
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "PythonPath",
            "PYTHONWARNINGS",
            "BASH_ENV",
            "ENV",
            "PERL5OPT",
            "NODE_OPTIONS",
            "JAVA_TOOL_OPTIONS",
            "PROMPT_COMMAND",
            "https_proxy",
        ] {
            assert!(is_steering(name), "{name}");
            assert!(!is_allowed(name, &[]), "{name}");
        }
        for name in [
            "MODE",
            "OMP_NUM_THREADS",
            "PYTHONUNBUFFERED",
            "ENVIRONMENT",
            "LDFLAGS_X",
            "MY_LD_PRELOAD",
        ] {
            assert!(!is_steering(name), "{name}");
            assert!(is_allowed(name, &[]), "{name}");
        }
        assert!(is_allowed(
            "LD_LIBRARY_PATH",
            &["LD_LIBRARY_PATH".to_owned()]
        ));
        assert!(
            !is_allowed("LD_PRELOAD", &["LD_LIBRARY_PATH".to_owned()]),
            "by exact name only"
        );
    }
}
