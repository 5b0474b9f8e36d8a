import Foundation
import Testing

/// The `deskline` executable, run as a separate process.
@Suite struct CLITests {
    let data = NSTemporaryDirectory() + "deskline-cli-data-" + UUID().uuidString

    func deskline(_ args: [String], stdin: String? = nil) async throws -> CLIProcess.Result {
        try await CLIProcess.run(args + ["--data", data], stdin: stdin)
    }

    @Test func customerLoginWhoseEmailDoesNotMatchIsRefused() async throws {
        #expect(try await deskline(["tenant", "add", "acme", "--name", "Acme Inc"]).status == 0)
        let customer = try await deskline(["customer", "add", "--tenant", "acme", "--name", "Ann", "--email", "ann@acme.test"])
        #expect(customer.status == 0)
        #expect(customer.stdout.contains("created customer c1"))

        let wrong = try await deskline(["user", "add", "--tenant", "acme", "--role", "customer", "--customer", "c1",
                                        "--email", "someone@acme.test"], stdin: "a good password\n")
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("does not match customer c1's email ann@acme.test"))

        let right = try await deskline(["user", "add", "--tenant", "acme", "--role", "customer", "--customer", "c1",
                                        "--email", "ann@acme.test"], stdin: "a good password\n")
        #expect(right.status == 0, "\(right.stderr)")
        #expect(right.stdout.contains("created customer login ann@acme.test (user u1) in tenant acme"))
    }

    @Test func passwordsAreNeverTakenFromArguments() async throws {
        #expect(try await deskline(["tenant", "add", "acme", "--name", "Acme"]).status == 0)
        let result = try await deskline(["user", "add", "--tenant", "acme", "--role", "agent", "--email", "amy@acme.test",
                                         "--password", "hunter22"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("Unknown option '--password'"))
        let noStdin = try await deskline(["user", "add", "--tenant", "acme", "--role", "agent", "--email", "amy@acme.test"], stdin: "")
        #expect(noStdin.status != 0)
        #expect(noStdin.stderr == "Error: expected the password on the first line of standard input\n")
    }

    @Test func invalidIdsAndDuplicatesGiveClearErrors() async throws {
        let bad = try await deskline(["tenant", "add", "../evil", "--name", "Evil"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("is not a valid tenant id"))
        #expect(try await deskline(["tenant", "add", "acme", "--name", "Acme"]).status == 0)
        let again = try await deskline(["tenant", "add", "acme", "--name", "Acme"])
        #expect(again.status != 0)
        #expect(again.stderr.contains("tenant acme already exists"))
    }

    @Test func unknownConfigKeyIsNamedAndServeExitsNonZero() async throws {
        let config = data + "-config.json"
        try Data(#"{"listen": {"port": 0}, "irc": {"port": 0, "tlsPort": 0}, "limitz": {}}"#.utf8).write(to: URL(fileURLWithPath: config))
        let result = try await CLIProcess.run(["serve", "--config", config])
        #expect(result.status != 0)
        #expect(result.stderr.contains("limitz: unknown key"))
    }

    #if os(Linux)
    @Test func serveRaisesItsOpenFilesLimitToTheHardLimit() async throws {
        let config = data + "-config.json"
        try Data(#"{"listen": {"port": 0}, "irc": {"port": 0, "tlsPort": 0}, "dataDirectory": "\#(data)", "logLevel": "warning"}"#.utf8)
            .write(to: URL(fileURLWithPath: config))
        // Started with a soft limit of 256 (the shell execs, so the pid stays the server's).
        let server = try CLIProcess(["-c", #"ulimit -Sn 256 && exec "$0" serve --config "$1""#, CLIProcess.executable.path, config],
                                    executable: URL(fileURLWithPath: "/bin/sh"))
        defer { if server.process.isRunning { server.process.interrupt() } }
        #expect(await server.waitForOutput("Connect with: nc"), "\(server.stdout) \(server.stderr)")
        let limits = try String(contentsOfFile: "/proc/\(server.process.processIdentifier)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        // "Max open files <soft> <hard> files"
        #expect(fields.count == 6 && fields[3] != "256" && fields[3] == fields[4], "\(line)")
        server.process.terminate()
        #expect(await server.wait().status == 0)
    }

    @Test(.timeLimit(.minutes(1))) func serveRestartsItselfWithHugePagesUnlessTurnedOff() async throws {
        /// The server's environment as /proc shows it (glibc splits GLIBC_TUNABLES in place at
        /// start, so it is matched piece by piece).
        func environment(_ hugePages: String) async throws -> String {
            let config = data + "-config.json"
            try Data(#"{"listen": {"port": 0}, "irc": {"port": 0, "tlsPort": 0}, "dataDirectory": "\#(data)", "logLevel": "warning"\#(hugePages)}"#.utf8)
                .write(to: URL(fileURLWithPath: config))
            // Another tunable and a variable of our own, which the restart must keep.
            let server = try CLIProcess(["-c", #"GLIBC_TUNABLES=glibc.malloc.check=0 DESKLINE_TEST_MARK=kept exec "$0" serve --config "$1""#,
                                         CLIProcess.executable.path, config],
                                        executable: URL(fileURLWithPath: "/bin/sh"))
            defer { if server.process.isRunning { server.process.interrupt() } }
            #expect(await server.waitForOutput("Connect with: nc"), "\(server.stdout) \(server.stderr)")
            let variables = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(server.process.processIdentifier)/environ"))
            server.process.terminate()
            #expect(await server.wait().status == 0)
            return String(decoding: variables.map { $0 == 0 ? UInt8(ascii: "\n") : $0 }, as: UTF8.self)
        }
        let restarted = try await environment("")
        #expect(restarted.contains("GLIBC_TUNABLES=glibc.malloc.check=0") && restarted.contains("glibc.malloc.hugetlb=1"))
        #expect(restarted.contains("DESKLINE_TEST_MARK=kept") && restarted.contains("DESKLINE_REEXECUTED=1"))
        let plain = try await environment(#", "hugePages": false"#)
        #expect(plain.contains("GLIBC_TUNABLES=glibc.malloc.check=0") && !plain.contains("hugetlb"))
        #expect(plain.contains("DESKLINE_TEST_MARK=kept"))
    }
    #endif

    @Test func demoServerAcceptsLoginsAndASecondServerIsRefused() async throws {
        let config = data + "-config.json"
        try Data(#"{"listen": {"port": 0}, "irc": {"port": 0, "tlsPort": 0}, "dataDirectory": "\#(data)", "logLevel": "warning", "passwordHashing": {"scryptN": 1024}}"#.utf8)
            .write(to: URL(fileURLWithPath: config))
        let server = try CLIProcess(["serve", "--config", config, "--demo"])
        defer { if server.process.isRunning { server.process.interrupt() } }
        #expect(await server.waitForOutput("Connect with: nc"), "\(server.stdout) \(server.stderr)")
        let out = server.stdout
        // "  customer  LOGIN carla@demo.example xxxx-xxxx-xxxx-xxxx"
        let loginLine = try #require(out.split(separator: "\n").first { $0.contains("LOGIN carla@demo.example") })
        let login = loginLine.split(separator: " ").drop(while: { $0 != "LOGIN" }).joined(separator: " ")
        let portText = try #require(out.split(separator: "\n").first { $0.hasPrefix("Connect with: nc") }?.split(separator: " ")[4])
        let port = try #require(Int(portText))

        let client = try await TestClient.connect(port: port)
        _ = try await client.readLine()
        #expect(try await client.command(login) == ["OK LOGIN customer demo u1 :Welcome, Carla Customer (Demo Company)"])

        let second = try await CLIProcess.run(["serve", "--config", config])
        #expect(second.status != 0)
        #expect(second.stderr.contains("another Deskline server is already using the data directory"))

        // The admin CLI works while the server runs, and the server sees the change at once.
        let tenant = try await CLIProcess.run(["tenant", "add", "acme", "--name", "Acme", "--config", config])
        #expect(tenant.stdout.contains("a Deskline server is running"))

        // The IRC listener is announced, and a message of the day set meanwhile is shown at the
        // next IRC login.
        let motd = try await CLIProcess.run(["tenant", "motd", "demo", "--text", "Hello from the CLI", "--config", config])
        #expect(motd.status == 0 && motd.stdout.contains("message of the day of demo set (1 lines)"), "\(motd.stdout) \(motd.stderr)")
        #expect(try await CLIProcess.run(["tenant", "motd", "demo", "--config", config]).stdout.hasPrefix("Hello from the CLI"))
        let ircLine = try #require(out.split(separator: "\n").first { $0.contains("listening for IRC clients on 127.0.0.1:") })
        let ircPort = try #require(Int(ircLine.split(separator: ":").last ?? ""))
        let irc = try await TestClient.connect(port: ircPort)
        let password = login.split(separator: " ").last ?? ""
        try await irc.send("PASS carla@demo.example:\(password)")
        try await irc.send("NICK carla")
        try await irc.send("USER carla 0 * :Carla")
        #expect(try await irc.expectLine(startingWith: ":deskline 372 ") == ":deskline 372 Carla_Customer :- Hello from the CLI")
        await irc.close()

        server.process.terminate() // SIGTERM: graceful shutdown
        #expect(try await client.readUntilClosed() == ["EVENT SHUTDOWN :The server is shutting down. Please reconnect later."])
        #expect(await server.wait().status == 0)
    }
}

extension CLITests {
    @Test func checkReportsDamageAndRepairFixesIt() async throws {
        #expect(try await deskline(["tenant", "add", "acme", "--name", "Acme"]).status == 0)
        _ = try await deskline(["customer", "add", "--tenant", "acme", "--name", "Ann", "--email", "ann@acme.test"])
        _ = try await deskline(["user", "add", "--tenant", "acme", "--role", "customer", "--customer", "c1", "--email", "ann@acme.test"],
                               stdin: "a good password\n")
        let clean = try await deskline(["check"])
        #expect(clean.status == 0, "\(clean.stdout) \(clean.stderr)")
        #expect(clean.stdout.hasSuffix("clean\n"))
        for f in try FileManager.default.contentsOfDirectory(atPath: data + "/logins") { try FileManager.default.removeItem(atPath: data + "/logins/" + f) }
        let broken = try await deskline(["check"])
        #expect(broken.status == 1)
        #expect(broken.stdout.contains("problem: login index for ann@acme.test does not match the users"))
        let repaired = try await deskline(["check", "--repair"])
        #expect(repaired.status == 0, "\(repaired.stdout) \(repaired.stderr)")
        #expect(repaired.stdout.contains("repaired: login index for ann@acme.test does not match the users"))
        #expect(try await deskline(["check"]).status == 0)
    }
}

extension CLITests {
    /// Scripts/crash-test: kill -9 while customers write; every acknowledged message survives
    /// exactly once and `deskline check` is clean after the restart. A few rounds here; the
    /// script's default is 20.
    @Test func killingTheServerLosesNoAcknowledgedMessage() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/crash-test").path
        let run = try await CLIProcess.run(["python3", script, "--rounds", "3", "--binary", CLIProcess.executable.path],
                                           executable: URL(fileURLWithPath: "/usr/bin/env"))
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("3 passed, 0 failed"))
    }
}

extension CLITests {
    @Test func serveWithTLSPrintsBothListenersAndLogsInOverTLS() async throws {
        let certificate = try TestCertificate.make()
        defer { certificate.remove() }
        let config = data + "-config.json"
        try Data(#"""
            {"listen": {"port": 0}, "irc": {"port": 0, "tlsPort": 0}, "dataDirectory": "\#(data)", "logLevel": "warning", "passwordHashing": {"scryptN": 1024},
             "tls": {"enabled": true, "port": 0, "certificateChainFile": "\#(certificate.certificateFile)",
                     "privateKeyFile": "\#(certificate.keyFile)", "requireTLSForLogin": true}}
            """#.utf8).write(to: URL(fileURLWithPath: config))
        let server = try CLIProcess(["serve", "--config", config, "--demo"])
        defer { if server.process.isRunning { server.process.interrupt() } }
        #expect(await server.waitForOutput("Connect over TLS with: openssl s_client -connect 127.0.0.1:"), "\(server.stdout) \(server.stderr)")
        let out = server.stdout.split(separator: "\n").map(String.init)
        // "Deskline 0.1.0 listening for TLS on 127.0.0.1:<port> (LOGIN only over TLS)"
        let listening = try #require(out.first { $0.contains("listening for TLS on 127.0.0.1:") })
        #expect(listening.hasSuffix(" (LOGIN only over TLS)"))
        let address = try #require(listening.split(separator: " ").first { $0.hasPrefix("127.0.0.1:") })
        let port = try #require(Int(address.split(separator: ":")[1]))
        #expect(out.contains("Connect over TLS with: openssl s_client -connect 127.0.0.1:\(port) -quiet"))
        let loginLine = try #require(out.first { $0.contains("LOGIN carla@demo.example") })
        let login = loginLine.split(separator: " ").drop(while: { $0 != "LOGIN" }).joined(separator: " ")

        let client = try await TestClient.connect(port: port, tls: certificate.clientContext())
        _ = try await client.readLine()
        #expect(try await client.command(login) == ["OK LOGIN customer demo u1 :Welcome, Carla Customer (Demo Company)"])
        server.process.terminate()
        #expect(try await client.readUntilClosed() == ["EVENT SHUTDOWN :The server is shutting down. Please reconnect later."])
        #expect(await server.wait().status == 0)
    }

    @Test func serveWithAnUnusableCertificateStopsWithTheKeyNamed() async throws {
        let config = data + "-config.json"
        let missing = data + "-missing-cert.pem"
        try Data(#"""
            {"listen": {"port": 0}, "irc": {"port": 0, "tlsPort": 0}, "dataDirectory": "\#(data)",
             "tls": {"enabled": true, "port": 0, "certificateChainFile": "\#(missing)", "privateKeyFile": "\#(missing)"}}
            """#.utf8).write(to: URL(fileURLWithPath: config))
        let result = try await CLIProcess.run(["serve", "--config", config])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr == "Error: tls.certificateChainFile: no such file \(missing)\n")
    }
}
