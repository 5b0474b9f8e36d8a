import ArgumentParser

/// Benchmarks that print figures (never timing asserts in tests). Build in release mode:
/// `Scripts/bench-store` does that and runs `deskline-bench store`.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deskline-bench",
        abstract: "Deskline benchmarks (run them from a release build; see README, Performance).",
        subcommands: [StoreBench.self, HistoryBench.self, FanoutBench.self, NodesBench.self, BurstBench.self]
    )
}
