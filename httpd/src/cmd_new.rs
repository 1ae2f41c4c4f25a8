//! `snapcall new --lang python|c NAME [DIR]`: a new function directory, ready for `snapcall
//! build`: a handler that answers, a `function.json` manifest, a README line (and an empty
//! `requirements.txt` for Python). An existing directory is never touched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cmd_build::build::manifest::{CSection, Lang, Manifest, PythonSection, ResponseKind, MANIFEST_FILE};
use crate::cmd_build::build::valid_name;

/// Command-line arguments of `snapcall new`.
#[derive(clap::Args)]
pub struct Args {
    /// The language of the handler.
    #[arg(long, value_enum)]
    lang: LangArg,
    /// The function's name (its route: /function/NAME).
    name: String,
    /// The directory to create (default: ./NAME). It must not exist.
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LangArg {
    Python,
    C,
}

const PYTHON_HANDLER: &str = r#""""NAME: a snapcall function.

handle(event, context) runs once per call, each call in its own brand-new VM. event["data"] is
the request body (parsed JSON, text, or bytes), event["extensions"]["request"] its method,
path, query and headers. Return a body, (body, status) or (body, status, headers).
What it prints to stderr goes to its log (snapcall logs NAME).
"""


def handle(event, context):
    request = event["extensions"]["request"]
    name = event["data"] or "world"
    print("NAME called:", request["method"], request["path"])  # print() goes to the log
    return "Hello, %s!\n" % (name,), 200, {"X-Function": context["function-name"]}
"#;

const C_HANDLER: &str = r#"/* NAME: a snapcall function. The request body is stdin, the answer stdout (exit 0: 200).
 * Method, path, query and headers are in /run/snapcall/request (docs/functions.md); what it
 * writes to stderr goes to its log (snapcall logs NAME). */
#include <stdio.h>
#include <string.h>

static char body[65536];

int main(void)
{
    size_t n = fread(body, 1, sizeof body - 1, stdin);
    char method[32] = "?";
    FILE *request = fopen("/run/snapcall/request", "r");
    if (request) {
        if (fscanf(request, "method %31s", method) != 1)
            strcpy(method, "?");
        fclose(request);
    }
    fprintf(stderr, "NAME: %s with %zu bytes\n", method, n);
    printf("Hello from C, %s!\n", n ? body : "world");
    return 0;
}
"#;

fn fail(message: &str) -> ExitCode {
    eprintln!("snapcall new: {message}");
    ExitCode::FAILURE
}

pub fn main(args: Args) -> ExitCode {
    if !valid_name(&args.name) {
        return fail(&format!(
            "{:?} is not a function name: use letters, digits, '.', '_' and '-' (not first '.')",
            args.name
        ));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    match create(&dir, &args.name, args.lang) {
        Ok(files) => {
            for f in &files {
                eprintln!("snapcall new: wrote {}", dir.join(f).display());
            }
            eprintln!(
                "snapcall new: next: snapcall build {0} -o functions/{1} && snapcall serve --functions functions",
                dir.display(),
                args.name
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Creates `dir` and its files; the names written, relative to `dir`.
fn create(dir: &Path, name: &str, lang: LangArg) -> Result<Vec<&'static str>, String> {
    if dir.symlink_metadata().is_ok() {
        return Err(format!("{} exists already: choose another directory (nothing was changed)", dir.display()));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    // create_dir (not _all) fails if someone made it meanwhile: never write into theirs.
    std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let manifest = match lang {
        LangArg::Python => Manifest {
            lang: Lang::Python,
            memory_mib: Some(256),
            timeout_ms: Some(10_000),
            max_output_bytes: None,
            content_type: Some("text/plain; charset=utf-8".into()),
            response: Some(ResponseKind::Cgi),
            python: Some(PythonSection { module: Some("handler".into()), handler: Some("handle".into()) }),
            c: None,
        },
        LangArg::C => Manifest {
            lang: Lang::C,
            memory_mib: Some(64),
            timeout_ms: Some(10_000),
            max_output_bytes: None,
            content_type: Some("text/plain; charset=utf-8".into()),
            response: Some(ResponseKind::Body),
            python: None,
            c: Some(CSection {
                sources: Some(vec!["handler.c".into()]),
                libc: Some(crate::cmd_build::build::manifest::Libc::Glibc),
                ..CSection::default()
            }),
        },
    };
    let mut json = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    json.push('\n');
    let (handler_file, handler, readme) = match lang {
        LangArg::Python => (
            "handler.py",
            PYTHON_HANDLER,
            "a Python function for snapcall: handler.py, pure-Python packages in requirements.txt; \
             `snapcall build .` makes its bundle (docs/functions.md)",
        ),
        LangArg::C => (
            "handler.c",
            C_HANDLER,
            "a C function for snapcall: handler.c, compiled static; `snapcall build .` makes its \
             bundle (docs/functions.md)",
        ),
    };
    let mut files: Vec<(&'static str, String)> = vec![
        (MANIFEST_FILE, json),
        (handler_file, handler.replace("NAME", name)),
        ("README.md", format!("# {name}\n\n{name}: {readme}.\n")),
    ];
    if matches!(lang, LangArg::Python) {
        files.push(("requirements.txt", "# pure-Python packages, one per line (pip requirement syntax)\n".into()));
    }
    for (file, text) in &files {
        std::fs::write(dir.join(file), text).map_err(|e| format!("{}: {e}", dir.join(file).display()))?;
    }
    Ok(files.iter().map(|(f, _)| *f).collect())
}
