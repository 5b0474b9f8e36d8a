import DesklineCore
@testable import DesklineGateway
import Foundation
import NIOSSL
import Testing

/// The TLS listener (`tls` in config.json) and `tls.requireTLSForLogin`, over real sockets with a
/// certificate made at test time.
struct TLSTests {
    static let hello = "EVENT HELLO deskline \(DesklineVersion.current) :Welcome to Deskline. Log in with LOGIN <email> <password>; HELP lists commands."

    /// Runs `body` against a fresh server with TLS on (port 0) and a fresh certificate.
    func withTLSServer(requireTLSForLogin: Bool = false, configure: (inout GatewayConfiguration) -> Void = { _ in },
                       _ body: (TestServer, TestCertificate) async throws -> Void) async throws {
        let certificate = try TestCertificate.make()
        defer { certificate.remove() }
        try await withServer(configure: { config in
            config.tls.enabled = true
            config.tls.certificateChainFile = certificate.certificateFile
            config.tls.privateKeyFile = certificate.keyFile
            config.tls.requireTLSForLogin = requireTLSForLogin
            configure(&config)
        }) { server in
            try await body(server, certificate)
        }
    }

    /// Waits (up to 5 s) until the server has `count` sessions.
    func waitForSessions(_ server: TestServer, count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while server.server.sessionCount != count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(server.server.sessionCount == count)
    }

    @Test func ircClientsLogInOverTheIRCTLSListenerAndArePointedThereWhenTLSIsRequired() async throws {
        try await withTLSServer(requireTLSForLogin: true) { server, certificate in
            let tlsPort = try #require(server.server.address(.irc, tls: true)?.port)
            #expect(tlsPort != server.ircPort && tlsPort != server.tlsPort)
            // Over TLS: SASL works as anywhere.
            let secure = try await TestClient.connect(port: tlsPort, tls: certificate.clientContext())
            try await secure.send("CAP REQ :sasl")
            try await secure.send("NICK amy")
            try await secure.send("USER amy 0 * :Amy")
            try await secure.send("AUTHENTICATE PLAIN")
            try await secure.send("AUTHENTICATE " + Data("\0amy@acme.test\0\(TestServer.password)".utf8).base64EncodedString())
            try await secure.send("CAP END")
            #expect(try await secure.sync().contains { $0.hasPrefix(":deskline 001 Amy_Agent ") })
            // On the plaintext IRC port a password is refused before it is checked, pointing to
            // the IRC TLS port.
            let plain = try await server.ircConnect()
            try await plain.send("PASS amy@acme.test:\(TestServer.password)")
            #expect(try await plain.readUntilClosed() == [
                ":deskline 464 * :Log in over TLS on port \(tlsPort) (this connection is not encrypted)",
                "ERROR :Closing link: log in over TLS on port \(tlsPort)"])
            let sasl = try await server.ircConnect()
            try await sasl.send("AUTHENTICATE PLAIN")
            #expect(try await sasl.readUntilClosed().first == ":deskline 464 * :Log in over TLS on port \(tlsPort) (this connection is not encrypted)")
            await secure.close()
        }
    }

    @Test func customerLogsInOverTLSAndHerEventsReachPlaintextSessions() async throws {
        try await withTLSServer { server, certificate in
            let ada = try await server.login("ada@acme.test") // plaintext: TLS is offered, not required
            let ann = try await server.connect(tls: certificate.clientContext())
            #expect(try await ann.readLine() == Self.hello)
            #expect(try await ann.command("LOGIN ann@acme.test \(TestServer.password)") == ["OK LOGIN customer acme u1 :Welcome, Ann Customer (Acme Inc)"])
            #expect(try await ann.command("NEW Printer on fire").first?.hasPrefix("OK NEW #1001 open") == true)
            // One hub for both listeners: the admin on the plaintext listener hears of it.
            #expect(try await ada.expectLine(startingWith: "EVENT NEW").hasPrefix("EVENT NEW #1001 20"))
            #expect(try await ann.command("QUIT") == ["OK QUIT :Goodbye"])
            #expect(try await ann.readUntilClosed() == [])
            #expect(await ann.endingError() == nil, "the server closes TLS cleanly (close_notify)")
        }
    }

    @Test func plaintextLoginIsRefusedBeforeAnyPasswordWorkWhenTLSIsRequired() async throws {
        try await withTLSServer(requireTLSForLogin: true) { server, certificate in
            let tlsPort = try #require(server.tlsPort)
            let plain = try await server.connect()
            #expect(try await plain.readLine() == "EVENT HELLO deskline \(DesklineVersion.current) :Welcome to Deskline. "
                + "This connection is not encrypted: log in over TLS on port \(tlsPort); HELP lists commands.")
            let refusal = "ERR LOGIN TLS_REQUIRED :Log in over TLS on port \(tlsPort) (this connection is not encrypted)."
            #expect(try await plain.command("LOGIN ann@acme.test \(TestServer.password)") == [refusal])
            // Refused before the parameters are even checked, and labelled like any reply.
            #expect(try await plain.command("@label=l1 LOGIN") == ["@label=l1 " + refusal])
            // No password was checked and no failure counted: more refusals than the address may fail ...
            for _ in 0..<8 { #expect(try await plain.command("LOGIN ann@acme.test wrong") == [refusal]) }
            // ... the commands that carry no password still work ...
            #expect(try await plain.command("HELP").last == "OK HELP 5 :5 commands available before LOGIN")
            #expect(try await plain.command("PING :still here") == ["OK PING :still here"])
            // ... and the same account, from the same address, logs in over TLS at once.
            let secure = try await server.connect(tls: certificate.clientContext())
            #expect(try await secure.readLine() == Self.hello)
            #expect(try await secure.command("LOGIN ann@acme.test \(TestServer.password)").first?.hasPrefix("OK LOGIN customer") == true)
            // Over TLS, PASSWD is not refused: a wrong current password is just wrong.
            #expect(try await secure.command("PASSWD wrong a-new-password").first?.hasPrefix("ERR PASSWD WRONG_PASSWORD ") == true)
        }
    }

    @Test func commandsThatCarryPasswordsAreTheOnesRefusedOnPlaintext() {
        let names = CommandTable.standard.commands.filter(\.carriesPassword).map(\.name)
        #expect(names == ["LOGIN", "PASSWD", "CUSTOMER"])
    }

    @Test func plaintextSentToTheTLSPortClosesThatConnectionOnly() async throws {
        try await withTLSServer { server, certificate in
            let plain = try await server.login("amy@acme.test")
            let confused = try await TestClient.connect(port: try #require(server.tlsPort))
            try await confused.send("LOGIN ann@acme.test \(TestServer.password)")
            let lines = try await confused.readUntilClosed()
            #expect(!lines.contains { $0.contains("HELLO") || $0.contains("LOGIN") }, "\(lines)")
            // A client that connects and says nothing at all is closed just as well when it leaves.
            let silent = try await TestClient.connect(port: try #require(server.tlsPort))
            await silent.close()
            // The server keeps serving on both listeners, and the failed connections are gone.
            #expect(try await plain.command("PING :plain") == ["OK PING :plain"])
            let secure = try await server.login("ann@acme.test", tls: certificate.clientContext())
            #expect(try await secure.command("PING :tls") == ["OK PING :tls"])
            try await waitForSessions(server, count: 2)
        }
    }

    @Test func clientThatOffersOnlyTLS11IsRefused() async throws {
        #expect(GatewayConfiguration.TLS.minimumVersion == .tlsv12)
        try await withTLSServer { server, certificate in
            let old = try await server.connect(tls: certificate.clientContext(minimumVersion: .tlsv1, maximumVersion: .tlsv11))
            #expect(try await old.readLine() == nil)
            let error = try #require(await old.endingError())
            // The server's alert: the version is what it refused, not the ciphers or the certificate.
            #expect("\(error)".contains("PROTOCOL_VERSION"), "\(error)")
            let tls12 = try await server.connect(tls: certificate.clientContext(maximumVersion: .tlsv12))
            #expect(try await tls12.readLine() == Self.hello)
        }
    }

    @Test func connectionLimitsCountBothListenersTogether() async throws {
        try await withTLSServer(configure: { $0.limits.maxConnectionsPerAddress = 2 }) { server, certificate in
            let plain = try await server.guest()
            let secure = try await server.guest(tls: certificate.clientContext())
            let refusal = ["EVENT ERROR TOO_MANY_CONNECTIONS :Too many connections from your address."]
            let thirdOverTLS = try await server.connect(tls: certificate.clientContext())
            #expect(try await thirdOverTLS.readUntilClosed() == refusal)
            let thirdInPlaintext = try await server.connect()
            #expect(try await thirdInPlaintext.readUntilClosed() == refusal)
            await plain.close()
            try await waitForSessions(server, count: 1)
            let again = try await server.guest(tls: certificate.clientContext())
            #expect(try await again.command("PING") == ["OK PING :"])
            _ = secure
        }
    }

    @Test func shutdownNoticeReachesTLSSessions() async throws {
        try await withTLSServer { server, certificate in
            let secure = try await server.login("amy@acme.test", tls: certificate.clientContext())
            server.server.shutdown()
            #expect(try await secure.readUntilClosed() == ["EVENT SHUTDOWN :The server is shutting down. Please reconnect later."])
        }
    }
}

/// Certificate and key files that cannot be used are startup errors naming the key.
struct TLSFileTests {
    func error(_ configure: (inout GatewayConfiguration.TLS) -> Void) -> String? {
        var tls = GatewayConfiguration.TLS()
        tls.enabled = true
        configure(&tls)
        do {
            _ = try tls.makeServerContext()
            return nil
        } catch {
            return error.description
        }
    }

    @Test func usableFilesMakeAContext() throws {
        let certificate = try TestCertificate.make()
        defer { certificate.remove() }
        #expect(error {
            $0.certificateChainFile = certificate.certificateFile
            $0.privateKeyFile = certificate.keyFile
        } == nil)
    }

    @Test func missingAndWrongFilesAreNamed() throws {
        let certificate = try TestCertificate.make()
        let other = try TestCertificate.make()
        defer {
            certificate.remove()
            other.remove()
        }
        let missing = certificate.directory + "/missing.pem"
        #expect(error {
            $0.certificateChainFile = missing
            $0.privateKeyFile = certificate.keyFile
        } == "tls.certificateChainFile: no such file \(missing)")
        #expect(error {
            $0.certificateChainFile = certificate.keyFile
            $0.privateKeyFile = certificate.keyFile
        } == "tls.certificateChainFile: \(certificate.keyFile) holds no PEM certificate")
        #expect(error {
            $0.certificateChainFile = certificate.certificateFile
            $0.privateKeyFile = certificate.directory
        } == "tls.privateKeyFile: no such file \(certificate.directory)")
        #expect(error {
            $0.certificateChainFile = certificate.certificateFile
            $0.privateKeyFile = certificate.certificateFile
        } == "tls.privateKeyFile: \(certificate.certificateFile) holds no unencrypted PEM private key")
        // Another certificate's key.
        let mismatch = error {
            $0.certificateChainFile = certificate.certificateFile
            $0.privateKeyFile = other.keyFile
        }
        #expect(mismatch?.hasPrefix("tls.privateKeyFile: \(other.keyFile) cannot be used with the certificate in tls.certificateChainFile") == true,
                "\(mismatch ?? "no error")")
        // An encrypted key would need a passphrase at every start; it is refused, never prompted for.
        let encrypted = certificate.directory + "/encrypted.pem"
        try TestCertificate.openssl(["pkey", "-in", certificate.keyFile, "-aes256", "-passout", "pass:secret", "-out", encrypted])
        #expect(error {
            $0.certificateChainFile = certificate.certificateFile
            $0.privateKeyFile = encrypted
        } == "tls.privateKeyFile: \(encrypted) holds no unencrypted PEM private key")
    }
}
