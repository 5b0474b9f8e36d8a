import DesklineCore
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite struct SendQueueTests {
    @Test func aClientThatStopsReadingIsHeldBackThenTimedOutWhileOthersAreServed() async throws {
        try await withServer(configure: {
            $0.limits.sendQueueLines = 16
            $0.limits.registrationTimeoutSeconds = 3
            // No flood pacing: its replies stall long before the timeout.
            $0.limits.floodBurst = 100_000
            $0.limits.floodCommandsPerSecond = 100_000
        }) { server in
            let good = try await server.login("ann@acme.test")
            // A raw client that never reads sends 20,000 HELPs (about 9 MB of replies). Its
            // replies fill its receive window, the server's send buffer and NIO's 64 KiB; then
            // the server runs none of its further commands and reads no more of its lines.
            let stalled = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.autoRead, value: false)
                .channelOption(.socketOption(.so_rcvbuf), value: 4096)
                .connect(host: "127.0.0.1", port: server.port).get()
            let deadline = ContinuousClock.now + .seconds(30)
            while server.server.sessionCount < 2, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(server.server.sessionCount == 2)
            stalled.writeAndFlush(ByteBuffer(string: String(repeating: "HELP\r\n", count: 20_000)), promise: nil)
            try await Task.sleep(for: .milliseconds(500))
            // Held back, not served, not cut off: the rest of its lines wait in its own socket.
            #expect(server.server.sessionCount == 2)
            #expect(try await good.command("PING still-served") == ["OK PING :still-served"])
            // A client that never logs in is closed by the registration timeout (3 s) and the
            // linger time (0.5 s in tests) even though it never read a line (a reply waiting
            // for it to read does not hold the timeout off).
            while server.server.sessionCount > 1, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(server.server.sessionCount == 1)
            #expect(try await good.command("PING still-served") == ["OK PING :still-served"])
            try? await stalled.close()
            await good.close()
        }
    }

    @Test func aReplyLongerThanTheSendQueueReachesAClientThatReads() async throws {
        // 1,000 lines of QUEUE (90 KB): far more than the send queue (16 lines past NIO's 64 KiB), but
        // the client reads them as they come. Only a client that stops reading is cut off.
        try await withServer(configure: { $0.limits.sendQueueLines = 16 }) { server in
            let acme = TenantID(rawValue: "acme")!, ann = CustomerID(rawValue: "c1")!
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 1...1000 {
                    group.addTask { _ = try await server.store.openTicket(customer: ann, subject: "Ticket number \(n) with a longer subject line", in: acme, at: Date()) }
                }
                try await group.waitForAll()
            }
            let amy = try await server.login("amy@acme.test")
            let reply = try await amy.command("QUEUE all")
            #expect(reply.count == 1001)
            #expect(reply.last == "OK QUEUE 1000 :1000 tickets")
            #expect(reply.dropLast().allSatisfy { $0.hasPrefix("RPL QUEUE #") })
            #expect(try await amy.command("PING still-here") == ["OK PING :still-here"])
            await amy.close()
        }
    }

    @Test func endedSessionWhoseClientDoesNotReadIsClosedAfterTheLingerTime() async throws {
        try await withServer(configure: {
            $0.limits.sendQueueLines = 1_000_000 // so the send queue does not cut it off first
            $0.limits.registrationTimeoutSeconds = 1
        }) { server in
            let stalled = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.autoRead, value: false)
                .connect(host: "127.0.0.1", port: server.port).get()
            // ~20 MB of HELP replies: more than the socket buffers hold, so the writer blocks.
            let burst = ByteBuffer(string: String(repeating: "HELP\r\n", count: 5000))
            for _ in 0..<8 {
                do { try await stalled.writeAndFlush(burst).get() } catch { break } // closed already
            }
            let deadline = ContinuousClock.now + .seconds(20)
            while server.server.sessionCount > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            // Registration timeout (1 s) + linger (0.5 s in tests), not "never".
            #expect(server.server.sessionCount == 0)
            try? await stalled.close()
        }
    }

    @Test func stalledAgentIsCutOffWhileAnotherKeepsReceivingEveryEvent() async throws {
        let log = LogCapture()
        try await withServer(logger: log.logger(), configure: {
            $0.limits.sendQueueLines = 16
            $0.limits.maxLineBytes = 16_384
            $0.limits.floodCommandsPerSecond = 10_000 // the customer writes as fast as it can here
        }) { server in
            let ann = try await server.login("ann@acme.test")
            _ = try await ann.command("NEW Busy ticket")
            let abe = try await server.login("abe@acme.test")
            // Amy logs in and follows the ticket, then never reads again; a small receive buffer
            // makes her side fill up quickly.
            let stalled = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.autoRead, value: false)
                .channelOption(.socketOption(.so_rcvbuf), value: 4096)
                .connect(host: "127.0.0.1", port: server.port).get()
            try await stalled.writeAndFlush(ByteBuffer(string: "LOGIN amy@acme.test \(TestServer.password)\r\nJOIN #1001\r\n")).get()
            let deadline = ContinuousClock.now + .seconds(60)
            while server.server.sessionCount < 3, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(200)) // let LOGIN and JOIN complete

            let text = String(repeating: "x", count: 3000)
            var posted = 0
            while server.server.sessionCount == 3, posted < 2000, ContinuousClock.now < deadline {
                posted += 1
                #expect(try await ann.command("MSG #1001 \(posted) \(text)").first?.hasPrefix("OK MSG") == true)
            }
            #expect(server.server.sessionCount == 2, "the stalled session is still connected after \(posted) messages")
            // Abe got every one of them, in order, without waiting for the stalled session.
            var received: [Int] = []
            while received.count < posted {
                let line = try await abe.expectLine(startingWith: "EVENT TICKET #1001 ", timeout: .seconds(20))
                received.append(Int(line.split(separator: ":").last!.split(separator: " ").first!)!)
            }
            #expect(received == Array(1...posted))
            // The operator's log says who was cut off, and why.
            let cutOff = log.records("connection closed").filter { $0.metadata["reason"] == "SENDQ_EXCEEDED" }
            #expect(cutOff.count == 1)
            #expect(cutOff.first?.metadata["user"] == "u2")
            #expect(cutOff.first?.level == .info)
            try? await stalled.close()
            for c in [ann, abe] { await c.close() }
        }
    }
}
