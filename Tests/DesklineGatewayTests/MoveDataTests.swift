import DesklineCore
import DesklineGateway
import DesklinePostgres
import DesklinePostgresTesting
import Foundation
import Testing

/// `deskline export` and `deskline import` as a user moving from one machine to a cluster runs
/// them: files → PostgreSQL → files, through the CLI.
struct MoveDataTests {
    /// What each user is told when they look around: the replies that must not change when the
    /// data moves.
    static let script: [(String, [String])] = [
        ("ann@acme.test", ["ME", "TICKETS", "SHOW #1001", "HISTORY #1001", "HISTORY #1001 before 2 1", "NOTIFICATIONS all", "CALLS"]),
        ("amy@acme.test", ["QUEUE", "QUEUE all", "HISTORY #1001", "HISTORY #1002", "NOTIFICATIONS all", "CALLS all"]),
        ("ada@acme.test", ["NOTIFICATIONS all", "QUEUE all"]),
        ("bob@acme.test", ["TICKETS", "SHOW #1001", "HISTORY #1002"]),
        ("gus@globex.test", ["TICKETS", "NOTIFICATIONS all"]),
    ]

    static func replies(port: Int) async throws -> [String] {
        var all: [String] = []
        for (email, commands) in script {
            let client = try await TestClient.connect(port: port)
            _ = try await client.readLine()
            try await client.send("LOGIN \(email) \(TestServer.password)")
            all.append(try #require(try await client.readLine()))
            for command in commands { all += try await client.command(command) }
            _ = try await client.command("QUIT")
        }
        return all
    }

    /// `deskline check`'s report without the directory's name.
    static func check(_ root: String) async throws -> String {
        let result = try await CLIProcess.run(["check", "--data", root])
        #expect(result.status == 0, "check of \(root): \(result.stdout) \(result.stderr)")
        return result.stdout.replacingOccurrences(of: root, with: "<data>")
    }

    @Test func aHelpdeskMovedFromFilesToPostgreSQLAndBackAnswersTheSameAndChecksTheSame() async throws {
        // A helpdesk with some history on the file store.
        let original = try await TestServer.start()
        let ann = try await original.login("ann@acme.test")
        let amy = try await original.login("amy@acme.test")
        _ = try await ann.command("NEW :The printer jams")
        _ = try await ann.command("MSG #1001 :Again this morning")
        _ = try await amy.command("NOTE #1001 :Tray 2 is worn")
        _ = try await amy.command("MSG #1001 :A new tray is on its way")
        _ = try await amy.command("STATUS #1001 pending")
        _ = try await ann.command("CALL #1001 :Mornings please")
        _ = try await ann.command("READ 1")
        let bob = try await original.login("bob@acme.test")
        _ = try await bob.command("NEW :Mouse")
        _ = try await amy.command("ASSIGN #1002 me")
        _ = try await amy.command("MSG #1002 :Which model?")
        for client in [ann, amy, bob] { _ = try await client.command("QUIT") }
        // (A customer's reading marks their ticket read: the second look is the one to keep.)
        _ = try await Self.replies(port: original.port)
        let before = try await Self.replies(port: original.port)
        try await original.stopKeepingData()
        // As `deskline serve` leaves it at a clean stop (the journals emptied into the logs).
        _ = await original.store.waitUntilWritesFinish()
        _ = await original.store.checkpointAll()
        let checkedBefore = try await Self.check(original.root)

        let work = NSTemporaryDirectory() + "deskline-move-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let exported = try await CLIProcess.run(["export", "--data", original.root, "--output", work + "/files.jsonl"])
        #expect(exported.status == 0, "\(exported.stderr)")
        #expect(exported.stderr.contains("exported acme: 2 customers, 5 users, 2 tickets, 6 entries, 1 calls"), "\(exported.stderr)")
        // Not over an existing file.
        let again = try await CLIProcess.run(["export", "--data", original.root, "--output", work + "/files.jsonl"])
        #expect(again.status != 0 && again.stderr.contains("exists"))

        // Into PostgreSQL (a node on it answers the same), and out again.
        let postgres = try await TestPostgres.server()
        let settings = try await TestPostgres.freshSchema(postgres)
        let config = work + "/config.json"
        try Data("""
            {"listen": {"host": "127.0.0.1", "port": 0}, "hugePages": false, "passwordHashing": {"scryptN": 1024},
             "storage": {"backend": "postgres", "postgres": {"port": \(settings.port), "passwordFile": "\(settings.passwordFile ?? "")",
                         "tls": "disable", "schema": "\(settings.schema)"}}}
            """.utf8).write(to: URL(fileURLWithPath: config))
        let imported = try await CLIProcess.run(["import", work + "/files.jsonl", "--config", config])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("imported acme: ") && imported.stdout.contains("imported globex: "), "\(imported.stdout)")
        let twice = try await CLIProcess.run(["import", work + "/files.jsonl", "--config", config])
        #expect(twice.status != 0 && twice.stderr.contains("tenant acme already exists; nothing was imported"), "\(twice.stderr)")
        let node = try await TestNode.start(settings, password: postgres.password)
        let onPostgres = try await Self.replies(port: node.port)
        await node.stop()
        #expect(onPostgres == before)
        let fromPostgres = try await CLIProcess.run(["export", "--config", config, "--output", work + "/postgres.jsonl"])
        #expect(fromPostgres.status == 0, "\(fromPostgres.stderr)")
        // The same dump, but for the time it was made.
        let dumps = try [work + "/files.jsonl", work + "/postgres.jsonl"].map { path in
            try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").dropFirst()
        }
        #expect(dumps[0] == dumps[1])

        // Back onto the file store, in a new directory.
        let back = work + "/data"
        let restored = try await CLIProcess.run(["import", work + "/postgres.jsonl", "--data", back])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try await Self.check(back) == checkedBefore)
        let server = try await TestServer.start(root: back, seed: false)
        let after = try await Self.replies(port: server.port)
        // And it goes on from there: the next ticket is #1003.
        let ann2 = try await server.login("ann@acme.test")
        #expect(try await ann2.command("NEW :Scanner").last?.hasPrefix("OK NEW #1003 ") == true)
        try await server.stop()
        #expect(after == before)
        try? FileManager.default.removeItem(atPath: original.root)
    }

    /// A tenant imported into a running cluster is history to its nodes: a session that logs in
    /// right after is not pushed its old events; what happens from then on is pushed.
    @Test func aTenantImportedIntoARunningClusterIsNotReplayedAsPushes() async throws {
        // Some history on a file store.
        let original = try await TestServer.start()
        let ann = try await original.login("ann@acme.test")
        _ = try await ann.command("NEW :Old ticket")
        _ = try await ann.command("MSG #1001 :Old message")
        _ = try await ann.command("QUIT")
        let dump = try #require(try await TenantDump.read(TenantID(rawValue: "acme")!, from: original.store))
        try await original.stop()
        #expect(dump.events.count >= 2)

        let postgres = try await TestPostgres.server()
        var settings = try await TestPostgres.freshSchema(postgres)
        // No poll during the test: the node learns of the tenant from the ring below.
        settings.pollIntervalMilliseconds = 60_000
        let node = try await TestNode.start(settings, password: postgres.password)
        // Imported through another store (as `deskline import` is), while the node runs.
        let importer = PostgresStore(client: postgres.client, settings: settings, logger: TestPostgres.logger)
        try await importer.importTenant(dump, replacing: false)
        let amy = try await node.login("amy@acme.test")
        // A ring about the tenant (as its next write, or a poll, would bring): no history is pushed.
        let last = try #require(dump.events.last?.seq)
        _ = try await postgres.client.query("SELECT pg_notify(\(String("deskline_events_\(settings.schema)".prefix(63))), \("acme \(last)"))")
        let pushed = try await amy.drain(for: .milliseconds(1500))
        #expect(pushed.filter { $0.hasPrefix("EVENT ") && !$0.hasPrefix("EVENT NOTIFICATIONS") } == [], "\(pushed)")
        // What happens now is.
        let annAgain = try await node.login("ann@acme.test")
        _ = try await annAgain.command("MSG #1001 :New message")
        _ = try await amy.expectLine(startingWith: "EVENT TICKET #1001 ")
        await node.stop()
    }

}
