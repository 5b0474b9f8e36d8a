import Foundation

/// A `deskline serve` process on a fresh port.
struct ServerRun {
    let process: Process
    let port: Int
    /// The IRC listener's port.
    var ircPort: Int?
    let startSeconds: Double

    /// Limits no benchmark should run into (each caller may raise more).
    static let benchLimits: [String: Int] = ["maxConnectionsPerAddress": 100_000, "maxNewConnectionsPerAddressPerMinute": 1_000_000,
                                             "floodBurst": 100_000, "floodCommandsPerSecond": 100_000]

    /// Writes `work`/config.json: listeners on any free port, the data directory `work`/data,
    /// cheap password hashes, ``benchLimits`` with `limits` over them, and `storage` (config.json's
    /// `storage` object: the file store's group commit interval, or `backend` `postgres` and its
    /// settings). Returns its path.
    static func writeConfig(work: String, limits: [String: Int] = [:], storage: [String: Any] = [:]) throws -> String {
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let config = work + "/config.json"
        let settings: [String: Any] = ["listen": ["port": 0], "irc": ["port": 0], "dataDirectory": work + "/data", "logLevel": "warning",
                                       "passwordHashing": ["scryptN": 1024], "limits": benchLimits.merging(limits) { $1 }, "storage": storage]
        try JSONSerialization.data(withJSONObject: settings).write(to: URL(fileURLWithPath: config))
        return config
    }

    /// Starts `binary serve` with a config.json written into `work` (``writeConfig(work:limits:storage:)``)
    /// and returns once it listens.
    static func start(binary: String, work: String, limits: [String: Int] = [:], storage: [String: Any] = [:]) async throws -> ServerRun {
        let config = try writeConfig(work: work, limits: limits, storage: storage)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        let start = now()
        try process.run()
        var text = ""
        while true {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { throw BenchError("the server exited before listening:\n\(text)") }
            text += String(decoding: data, as: UTF8.self)
            if let range = text.range(of: #"Connect with: nc \S+ (\d+)"#, options: .regularExpression),
               let irc = text.range(of: #"listening for IRC clients on [0-9.]+:(\d+)"#, options: .regularExpression) {
                let port = Int(text[range].split(separator: " ").last!)!
                let ircPort = Int(text[irc].split(separator: ":").last!)
                return ServerRun(process: process, port: port, ircPort: ircPort, startSeconds: now() - start)
            }
        }
    }

    /// The server's resident set size in KiB.
    func rss() -> Int? { residentKiB(of: process.processIdentifier) }

    func stop() throws {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
