//! A certificate and its key given on the command line as two options (`connect
//! --client-cert/--client-key`, `serve --tls-cert/--tls-key`; the key in the
//! certificate's file when its option is left out): read, and every problem with them
//! reported against the option and file at fault, before anything is dialled or bound.

use std::path::Path;
use wxsocket_tokio::ClientIdentity;

/// The two options and the files they name.
pub struct IdentityFiles<'a> {
    /// The certificate chain's file.
    pub cert: &'a Path,
    /// The key's file, when its option was given.
    pub key: Option<&'a Path>,
    /// The certificate's option, as usage errors name it (`--client-cert <PEM>`).
    pub cert_option: &'static str,
    /// The key's option (`--client-key <PEM>`).
    pub key_option: &'static str,
}

/// A usage error: an option's value, the file it names and what is wrong with it.
pub fn invalid(option: &str, path: &str, problem: &str) -> String {
    format!("error: invalid value for '{option}': {path}: {problem}")
}

impl IdentityFiles<'_> {
    /// The file the key is read from.
    fn key_file(&self) -> &Path {
        self.key.unwrap_or(self.cert)
    }

    /// The option to blame for a problem of the key (the certificate's, when the key was
    /// looked for in its file).
    fn key_blamed(&self) -> &'static str {
        if self.key.is_some() {
            self.key_option
        } else {
            self.cert_option
        }
    }

    /// Reads the chain and the key.
    pub fn read(&self) -> Result<ClientIdentity, String> {
        ClientIdentity::from_pem_files(self.cert, self.key_file()).map_err(|e| {
            if e.field != "client_key" {
                return invalid(self.cert_option, &e.path, &e.problem);
            }
            let problem = match self.key {
                Some(_) => e.problem,
                None => format!(
                    "{} (without {}, the key is read from the certificate's file)",
                    e.problem,
                    self.key_option.split(' ').next().unwrap_or(self.key_option)
                ),
            };
            invalid(self.key_blamed(), &e.path, &problem)
        })
    }

    /// rustls's refusal of the pair, against the option and file at fault.
    pub fn refused(&self, error: &rustls::Error) -> String {
        let (file, problem) = wxsocket_wire::tls::identity_refusal(error);
        let (option, path) = match file {
            "client_key" => (self.key_blamed(), self.key_file()),
            _ => (self.cert_option, self.cert),
        };
        invalid(
            option,
            &path.display().to_string(),
            &format!("{problem} ({error})"),
        )
    }
}
