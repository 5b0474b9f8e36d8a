import Foundation
import Testing

/// IRC over a real socket, for the IRC dialect's tests: raw lines, plus the registration a
/// client does and a barrier (`PING`/`PONG`) to read "everything the server sent so far".
extension TestServer {
    /// A connection to the IRC listener (nothing sent yet).
    func ircConnect() async throws -> TestClient {
        try await TestClient.connect(port: try #require(ircPort, "the server has no IRC listener"))
    }

    /// Registers with `PASS <login>:<password>` (or SASL PLAIN), after asking for `caps`; returns
    /// the client and every line up to and including the welcome burst.
    func ircLogin(_ login: String, password: String = TestServer.password, caps: [String] = [], sasl: Bool = false,
                  nick: String = "guest") async throws -> (TestClient, [String]) {
        let client = try await ircConnect()
        var lines: [String] = []
        // As weechat and irssi do: CAP LS, then NICK and USER, then the rest of CAP.
        if !sasl { try await client.send("PASS \(login):\(password)") }
        try await client.send("CAP LS 302")
        try await client.send("NICK \(nick)")
        try await client.send("USER \(nick) 0 * :A test client")
        lines.append(try #require(try await client.readLine()))
        let wanted = caps + (sasl ? ["sasl"] : [])
        if !wanted.isEmpty {
            try await client.send("CAP REQ :\(wanted.joined(separator: " "))")
            lines.append(try #require(try await client.readLine()))
        }
        if sasl {
            try await client.send("AUTHENTICATE PLAIN")
            lines.append(try #require(try await client.readLine()))
            try await client.send("AUTHENTICATE " + Data("\0\(login)\0\(password)".utf8).base64EncodedString())
            while let line = try await client.readLine() {
                lines.append(line)
                if line.contains(" 903 ") || line.contains(" 904 ") { break }
            }
        }
        try await client.send("CAP END")
        lines += try await client.sync()
        #expect(lines.contains { $0.contains(" 001 ") }, "no welcome for \(login): \(lines)")
        return (client, lines)
    }
}

extension TestClient {
    /// Every line the server sends before it answers a `PING` sent now (replies keep the order
    /// of commands, and pushes before it were written before it).
    func sync(_ token: String = "sync") async throws -> [String] {
        try await send("PING :\(token)")
        var lines: [String] = []
        while let line = try await readLine() {
            if line == ":deskline PONG deskline :\(token)" { return lines }
            lines.append(line)
        }
        throw TestClientTimeout(waitingFor: "PONG \(token) after \(lines)")
    }

    /// Sends `line` and returns what the server sent in answer (up to a sync).
    func irc(_ line: String) async throws -> [String] {
        try await send(line)
        return try await sync()
    }
}
