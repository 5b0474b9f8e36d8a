@testable import DesklineGateway
import Foundation
import NIOCore
import NIOPosix
import Testing

@Suite struct ReadAheadTests {
    /// PROTOCOL.md: the server reads at most 16 lines ahead of the command it runs. A client
    /// that floods `HELP` and never reads its replies gets a few hundred answered; the rest of
    /// its lines must stay in its own socket, not in the server's memory.
    @Test func aClientThatNeverReadsHasAtMostSixteenLinesAndOneReadTakenAhead() async throws {
        try await withServer(configure: {
            // No flood pacing: the client is held back only by its unread replies.
            $0.limits.floodBurst = 100_000
            $0.limits.floodCommandsPerSecond = 100_000
        }) { server in
            let stalled = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.autoRead, value: false)
                .channelOption(.socketOption(.so_rcvbuf), value: 4096)
                .connect(host: "127.0.0.1", port: server.port).get()
            let deadline = ContinuousClock.now + .seconds(30)
            while server.server.inputMeters.isEmpty, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let meter = try #require(server.server.inputMeters.first)
            // 120,000 bytes of 6-byte lines; each HELP's reply is ~20 lines, so the server's
            // send buffers fill long before the client is done.
            let line = "HELP\r\n"
            stalled.writeAndFlush(ByteBuffer(string: String(repeating: line, count: 20_000)), promise: nil)
            // Wait until the server stops reading (nothing more taken for half a second).
            var last = -1
            while ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
                let now = meter.input.bytesRead.load(ordering: .relaxed)
                if now == last { break }
                last = now
            }
            let read = meter.input.bytesRead.load(ordering: .relaxed)
            let held = meter.input.mostHeld.load(ordering: .relaxed)
            // Held at most: 16 lines framed, one line not complete (at most one byte past the
            // line limit), one read past it.
            let bound = SessionHandler.maximumPendingLines * line.utf8.count + 4096 + 1 + SessionHandler.maximumReadBytes
            #expect(held <= bound, "held \(held) bytes of input at once (bound \(bound)); read \(read)")
            // And it did stop: most of what the client sent is still in the sockets.
            #expect(read < 20_000 * line.utf8.count)
            #expect(held > 0)
            try? await stalled.close()
        }
    }

    /// More lines than the session frames ahead, an overlong one among them, and a last line
    /// without a newline before the client half-closes: every one is answered, in order.
    @Test func linesBeyondTheReadAheadAnOverlongOneAndAnUnterminatedLastLineAreAllAnswered() async throws {
        try await withServer(configure: {
            $0.limits.floodBurst = 100_000
            $0.limits.floodCommandsPerSecond = 100_000
            $0.limits.maxLineBytes = 512
        }) { server in
            let client = try await server.guest()
            var input = (1...40).map { "PING p\($0)\r\n" }.joined()
            input += String(repeating: "x", count: 2000) + "\r\n"
            input += (41...60).map { "PING p\($0)\r\n" }.joined()
            input += "QUIT" // no newline: the end of input ends the line
            try await client.sendRaw(Array(input.utf8))
            await client.finishSending()
            let lines = try await client.readUntilClosed()
            var expected = (1...40).map { "OK PING :p\($0)" }
            expected.append("ERR * LINE_TOO_LONG :")
            expected += (41...60).map { "OK PING :p\($0)" }
            expected.append("OK QUIT :Goodbye")
            #expect(lines.count == expected.count)
            for (line, want) in zip(lines, expected) {
                #expect(line.hasPrefix(want), "\(line) should start with \(want)")
            }
        }
    }
}
