import DesklineCore
import Foundation
import Testing

/// Scripts/deskline-bot.py, the example bot, against a real server.
@Suite struct BotScriptTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Scripts/deskline-bot.py").path

    /// Ann opens a ticket and writes in it; the bot (Abe) assigns it to itself, then greets her.
    static func customerAsksAndIsAnswered(_ server: TestServer, greeting: String) async throws -> TestClient {
        let ann = try await server.login("ann@acme.test")
        _ = try await ann.command("NEW Bot please")
        // (Not `command`: the bot may answer before her OK arrives, and its events would be read
        // as part of her reply.)
        try await ann.send("MSG #1001 hello?")
        let assigned = try await ann.expectLine(startingWith: "EVENT TICKET", timeout: .seconds(20))
        #expect(assigned.hasSuffix(#" status agent Abe\sAgent :assigned to Abe Agent"#))
        let greeted = try await ann.expectLine(startingWith: "EVENT TICKET", timeout: .seconds(20))
        #expect(greeted.hasSuffix(#" message agent Abe\sAgent :"# + greeting))
        return ann
    }

    static func expectAssignedToAbe(_ server: TestServer) async throws {
        let ticket = try #require(try await server.store.ticket(TicketID(1001), in: TenantID(rawValue: "acme")!))
        #expect(ticket.assigneeId == UserID(rawValue: "u5"))
    }

    @Test func botAssignsUnassignedTicketsAndGreetsTheCustomer() async throws {
        try await withServer { server in
            let bot = try CLIProcess(["python3", Self.script, "--port", String(server.port), "--email", "abe@acme.test",
                                      "--greeting", "Hi, a bot here!", "--max-tickets", "1", "--idle-exit", "30"],
                                     executable: URL(fileURLWithPath: "/usr/bin/env"),
                                     environment: ["DESKLINE_PASSWORD": TestServer.password])
            defer { if bot.process.isRunning { bot.process.terminate() } }
            #expect(await bot.waitForOutput("logged in as agent of acme"), "\(bot.stdout) \(bot.stderr)")

            let ann = try await Self.customerAsksAndIsAnswered(server, greeting: "Hi, a bot here!")
            let result = await bot.wait()
            #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
            #expect(result.stdout.contains("#1001: assigned and greeted (OK), customer wrote: hello?"))
            try await Self.expectAssignedToAbe(server)
            await ann.close()
        }
    }
}

/// Scripts/deskline-irc-bot.py: a bot on the IRC dialect written with a real IRC client library
/// (PyPI `irc`), against a real server. The library is installed once into a virtual
/// environment under .build (needs python3 with venv and pip, and PyPI).
@Suite struct IRCBotScriptTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = root.appendingPathComponent("Scripts/deskline-irc-bot.py").path
    static let ircVersion = "20.5.0"

    /// The python of a virtual environment that has the `irc` library, made if needed.
    static func python() async throws -> String {
        let venv = root.appendingPathComponent(".build/python-irc-\(ircVersion)").path
        let python = venv + "/bin/python"
        if FileManager.default.fileExists(atPath: python),
           await (try CLIProcess(["-c", "import irc.client"], executable: URL(fileURLWithPath: python))).wait().status == 0 {
            return python
        }
        let made = try await CLIProcess.run(["python3", "-m", "venv", "--clear", venv], executable: URL(fileURLWithPath: "/usr/bin/env"))
        try #require(made.status == 0, "python3 -m venv failed (install python3-venv): \(made.stderr)")
        let installed = try await CLIProcess.run(["-m", "pip", "install", "--quiet", "irc==\(ircVersion)"], executable: URL(fileURLWithPath: python))
        try #require(installed.status == 0, "pip install irc==\(ircVersion) failed (PyPI needed once): \(installed.stderr)")
        return python
    }

    @Test func anIRCLibraryBotTakesATicketAndGreetsTheCustomer() async throws {
        let python = try await Self.python()
        try await withServer { server in
            let port = try #require(server.ircPort)
            let bot = try CLIProcess([Self.script, "--port", String(port), "--login", "acme/abe@acme.test",
                                      "--greeting", "Hi, an IRC bot here!", "--max-tickets", "1", "--idle-exit", "30"],
                                     executable: URL(fileURLWithPath: python),
                                     environment: ["DESKLINE_PASSWORD": TestServer.password])
            defer { if bot.process.isRunning { bot.process.terminate() } }
            #expect(await bot.waitForOutput("registered as Abe_Agent"), "\(bot.stdout) \(bot.stderr)")

            let ann = try await BotScriptTests.customerAsksAndIsAnswered(server, greeting: "Hi, an IRC bot here!")
            let result = await bot.wait()
            #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
            #expect(result.stdout.contains("#1001: assigned and greeted"))
            try await BotScriptTests.expectAssignedToAbe(server)
            await ann.close()
        }
    }
}
