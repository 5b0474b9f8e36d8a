import Foundation
import NIOSSL

/// A self-signed certificate for `localhost` and 127.0.0.1 with its key, made at test time with
/// the `openssl` command (so no key is ever checked in), in a directory of its own.
struct TestCertificate {
    let directory: String
    var certificateFile: String { directory + "/cert.pem" }
    var keyFile: String { directory + "/key.pem" }

    struct OpenSSLFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// Generates a fresh certificate and key (RSA 2048, valid for a day).
    static func make() throws -> TestCertificate {
        let directory = NSTemporaryDirectory() + "deskline-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificate = TestCertificate(directory: directory)
        try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                     "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
                     "-keyout", certificate.keyFile, "-out", certificate.certificateFile])
        return certificate
    }

    /// Runs the `openssl` command; fails with a clear message if it is not installed.
    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 127 {
            throw OpenSSLFailed(description: "the TLS tests need the openssl command to make a test certificate; install it (apt-get install openssl)")
        }
        guard process.terminationStatus == 0 else {
            throw OpenSSLFailed(description: "openssl \(arguments.joined(separator: " ")) failed: \(message)")
        }
    }

    /// A client context that trusts exactly this certificate and checks the name `localhost`.
    func clientContext(minimumVersion: TLSVersion = .tlsv12, maximumVersion: TLSVersion? = nil) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificateFile))
        configuration.minimumTLSVersion = minimumVersion
        configuration.maximumTLSVersion = maximumVersion
        return try NIOSSLContext(configuration: configuration)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
