import DesklineCore
import Foundation
import Testing

/// Scripts/deskline-bot.py, the example bot, against a real server.
@Suite struct BotScriptTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Scripts/deskline-bot.py").path

    @Test func botAssignsUnassignedTicketsAndGreetsTheCustomer() async throws {
        try await withServer { server in
            let bot = try CLIProcess(["python3", Self.script, "--port", String(server.port), "--email", "abe@acme.test",
                                      "--greeting", "Hi, a bot here!", "--max-tickets", "1", "--idle-exit", "30"],
                                     executable: URL(fileURLWithPath: "/usr/bin/env"),
                                     environment: ["DESKLINE_PASSWORD": TestServer.password])
            defer { if bot.process.isRunning { bot.process.terminate() } }
            #expect(await bot.waitForOutput("logged in as agent of acme"), "\(bot.stdout) \(bot.stderr)")

            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Bot please")
            _ = try await ann.command("MSG #1001 hello?")
            let assigned = try await ann.expectLine(startingWith: "EVENT TICKET", timeout: .seconds(20))
            #expect(assigned.hasSuffix(#" status agent Abe\sAgent :assigned to Abe Agent"#))
            let greeting = try await ann.expectLine(startingWith: "EVENT TICKET", timeout: .seconds(20))
            #expect(greeting.hasSuffix(#" message agent Abe\sAgent :Hi, a bot here!"#))

            let result = await bot.wait()
            #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
            #expect(result.stdout.contains("#1001: assigned and greeted (OK), customer wrote: hello?"))
            let ticket = try #require(try await server.store.ticket(TicketID(1001), in: TenantID(rawValue: "acme")!))
            #expect(ticket.assigneeId == UserID(rawValue: "u5"))
            await ann.close()
        }
    }
}
