import Foundation
import NIOCore
import NIOSSL

extension GatewayConfiguration.TLS {
    /// The oldest TLS version the listener accepts.
    public static let minimumVersion = TLSVersion.tlsv12
    /// How long a closing connection waits for the client's close_notify.
    static let closeNotifyTimeout = TimeAmount.seconds(1)

    /// Reads the certificate chain and key and builds the listener's TLS context. A file that is
    /// missing, unreadable or not what it should be is a ``ConfigurationError`` naming its key, so
    /// `deskline serve` stops at startup with a clear message.
    public func makeServerContext() throws(ConfigurationError) -> NIOSSLContext {
        let chainBytes = try Self.read(certificateChainFile, key: "tls.certificateChainFile")
        let chain = (try? NIOSSLCertificate.fromPEMBytes(chainBytes)) ?? []
        guard !chain.isEmpty else {
            throw ConfigurationError("tls.certificateChainFile: \(certificateChainFile) holds no PEM certificate")
        }
        let keyBytes = try Self.read(privateKeyFile, key: "tls.privateKeyFile")
        // Without a passphrase callback an encrypted key fails to load (it never prompts).
        guard let key = try? NIOSSLPrivateKey(bytes: keyBytes, format: .pem) else {
            throw ConfigurationError("tls.privateKeyFile: \(privateKeyFile) holds no unencrypted PEM private key")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = Self.minimumVersion
        // When the server closes a connection, NIOSSL sends close_notify and waits for the client's
        // before closing the socket. With half-closure allowed (so `nc -N`-style clients get every
        // reply) swift-nio-ssl 2.37 does not notice that answer and always waits the whole
        // timeout, 5 s by default: each closed session would hold its socket and its connection
        // slot that long, and shutdown would wait for it.
        configuration.shutdownTimeout = Self.closeNotifyTimeout
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(
                "tls.privateKeyFile: \(privateKeyFile) cannot be used with the certificate in tls.certificateChainFile (does the key belong to it?): \(error)")
        }
    }

    private static func read(_ path: String, key: String) throws(ConfigurationError) -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw ConfigurationError("\(key): no such file \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("\(key): cannot read \(path)")
        }
        return Array(data)
    }
}
