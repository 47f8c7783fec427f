//! Certificates for the remote listener's mutual TLS, made per test with rcgen, and `curl`
//! (a real TLS client, OpenSSL underneath) to call the listener with them.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The name Chaos Mesh's controller checks on a chaosd server certificate.
pub const SERVER_NAME: &str = "chaosd.chaos-mesh.org";

/// A client's certificate and key files.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA, a server certificate for [`SERVER_NAME`], `localhost` and 127.0.0.1 it signed, a
/// client certificate it signed, and a client certificate from another CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client: ClientCert,
    /// The subject of `client`, as chaosd's audit trail writes it.
    pub client_subject: &'static str,
    pub stranger: ClientCert,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    dn: &[(DnType, &str)],
    usage: ExtendedKeyUsagePurpose,
    dir: &Path,
    stem: &str,
) -> ClientCert {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let mut d = DistinguishedName::new();
    for (t, v) in dn {
        d.push(t.clone(), *v);
    }
    params.distinguished_name = d;
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    ClientCert {
        cert: cert_path,
        key: key_path,
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("chaosd-pki-")
            .tempdir()
            .unwrap();
        let ca = new_ca("chaosd test CA");
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let server = leaf(
            &ca,
            &[SERVER_NAME, "localhost", "127.0.0.1"],
            &[(DnType::CommonName, SERVER_NAME)],
            ExtendedKeyUsagePurpose::ServerAuth,
            dir.path(),
            "server",
        );
        let client = leaf(
            &ca,
            &["chaos-controller-manager"],
            &[
                (DnType::OrganizationName, "chaos-mesh"),
                (DnType::CommonName, "chaos-controller-manager"),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
            dir.path(),
            "client",
        );
        let other = new_ca("some other CA");
        let stranger = leaf(
            &other,
            &["intruder"],
            &[(DnType::CommonName, "intruder")],
            ExtendedKeyUsagePurpose::ClientAuth,
            dir.path(),
            "stranger",
        );
        Pki {
            ca: ca_path,
            server_cert: server.cert,
            server_key: server.key,
            client,
            client_subject: "CN=chaos-controller-manager,O=chaos-mesh",
            stranger,
            dir,
        }
    }

    /// The `[remote]` section serving on 127.0.0.1:`port` with these files.
    pub fn remote_config(&self, port: u16) -> String {
        format!(
            "[remote]\nlisten = \"127.0.0.1:{port}\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            self.server_cert, self.server_key, self.ca
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTP answer, or why curl got none (the TLS handshake failed, say).
pub type CurlResult = Result<(u16, String), String>;

/// `curl` to `https://chaosd.chaos-mesh.org:PORT{path}` (resolved to 127.0.0.1, the server
/// certificate checked against `ca`), presenting `client` if given.
pub fn curl(
    ca: &Path,
    port: u16,
    client: Option<&ClientCert>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> CurlResult {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "120",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(ca)
    .arg("--resolve")
    .arg(format!("{SERVER_NAME}:{port}:127.0.0.1"));
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("https://{SERVER_NAME}:{port}{path}"));
    let out = cmd.output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "curl exit {:?}: {}{text}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or(0);
    Ok((code, body.to_string()))
}
