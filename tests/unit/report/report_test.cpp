// scripts/report.py on the recorded JSON in tests/data/report: the tables
// carry the right ratios (median of repetitions, ratio to the floor or the
// futex of the same file, channel-against-peer matrix, errors shown), and
// without matplotlib the tables are still written and the report says the
// plots were skipped. tests/data/report/beside: round trips that measured
// their own reference beside them (x_floor / x_futex counters) are read
// against it, with its drift, and flagged beyond ±20%.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "shmbus/process.hpp"

namespace shmbus {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPython = "/usr/bin/python3";

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "shmbus-report-XXXXXX").string();
    path = ::mkdtemp(tmpl.data()) ? fs::path(tmpl) : fs::path();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first line of `text` that starts with `prefix`, after `after`.
std::string line_of(const std::string& text, const std::string& prefix,
                    const std::string& after = "") {
  std::size_t from = after.empty() ? 0 : text.find(after);
  if (from == std::string::npos) return "";
  std::istringstream in(text.substr(from));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return "";
}

// Cells of a markdown table row, trimmed.
std::vector<std::string> cells(const std::string& row) {
  std::vector<std::string> out;
  std::stringstream ss(row);
  std::string cell;
  std::getline(ss, cell, '|');  // before the first bar
  while (std::getline(ss, cell, '|')) {
    const auto b = cell.find_first_not_of(' ');
    const auto e = cell.find_last_not_of(' ');
    out.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
  }
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

// The cell of the channel-against-peer matrix in `row`'s line and
// `column`'s column ("(missing)" if either is not there).
std::string matrix_cell(const std::string& md, const std::string& row, const std::string& column) {
  const auto header = cells(line_of(md, "| channel |"));
  const auto line = cells(line_of(md, "| " + row + " |", "## shmbus channels against"));
  if (header.size() != line.size()) return "(missing)";
  for (std::size_t i = 1; i < header.size(); ++i) {
    if (header[i] == column) return line[i];
  }
  return "(missing)";
}

// Runs report.py on tests/data/report/<data> (JSON files at its top level).
int run_report(const fs::path& out, const std::string& data = "", bool plots = true) {
  std::vector<std::string> args{std::string(SHMBUS_SOURCE_DIR) + "/scripts/report.py",
                                "--json-dir",
                                std::string(SHMBUS_SOURCE_DIR) + "/tests/data/report/" + data,
                                "--out",
                                out.string(),
                                "--date",
                                "2026-11-22",
                                "--cpu-model",
                                "Test CPU"};
  if (!plots) args.emplace_back("--no-plots");
  auto p = Process::spawn(kPython, args);
  p.start();
  if (!p.join_for(120s)) {
    p.kill();
    p.join();
  }
  return p.exitcode().value_or(-1000);
}

class Report : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is not installed";
    ASSERT_FALSE(dir_.path.empty());
  }
  TempDir dir_;
};

TEST_F(Report, TablesCarryTheRatiosOfTheRecordedRuns) {
  ASSERT_EQ(run_report(dir_.path), 0);
  const std::string md = slurp(dir_.path / "report.md");
  ASSERT_FALSE(md.empty());
  EXPECT_NE(md.find("2026-11-22"), std::string::npos);
  EXPECT_NE(md.find("Test CPU"), std::string::npos);

  // pipe_bench: floor 200 ns, futex 100 µs; the busy round trip ran twice
  // (280, 320) and its median aggregate (310) is the one used: 1.55x.
  auto busy = cells(line_of(md, "| Pipe_Busy_RTT/64 |", "## pipe_bench"));
  ASSERT_EQ(busy.size(), 8u) << md;
  EXPECT_EQ(busy[1], "shmbus");
  EXPECT_EQ(busy[2], "310 ns");
  EXPECT_EQ(busy[6], "**1.55×**");
  auto block = cells(line_of(md, "| Pipe_Block_RTT/64 |", "## pipe_bench"));
  ASSERT_EQ(block.size(), 8u);
  EXPECT_EQ(block[2], "50.0 µs");
  EXPECT_EQ(block[6], "250×");
  EXPECT_EQ(block[7], "**0.50×**");
  EXPECT_NE(line_of(md, "| Pipe_Adaptive_RTT/64 |", "## pipe_bench").find("error: child died"),
            std::string::npos);
  auto stream = cells(line_of(md, "| Pipe_Stream/64 |", "## pipe_bench"));
  ASSERT_EQ(stream.size(), 5u);
  EXPECT_EQ(stream[2], "50.00 M");
  EXPECT_EQ(stream[4], "2.50×");  // 50 M against Boost.Lockfree's 20 M msg/s

  // peers_bench (recorded): floor 120.227 ns, futex 117582 ns; pipe(2)
  // 133041 ns is 1.13x the futex and 1107x the floor; Boost.Lockfree's
  // 180.34 ns is 1.50x the floor.
  auto pipe = cells(line_of(md, "| LinuxPipe_Block_RTT/64 |", "## peers_bench"));
  ASSERT_EQ(pipe.size(), 8u);
  EXPECT_EQ(pipe[1], "peer");
  EXPECT_EQ(pipe[6], "1107×");
  EXPECT_EQ(pipe[7], "**1.13×**");
  auto lf = cells(line_of(md, "| BoostLockfree_Busy_RTT/64 |", "## peers_bench"));
  ASSERT_EQ(lf.size(), 8u);
  EXPECT_EQ(lf[6], "**1.50×**");

  // Channel against peer, each normalised in its own file: both blocking
  // through the futex (1.1315 / 0.5 = 2.26), busy through the floor
  // (1.49999 / 1.55 = 0.97).
  EXPECT_EQ(matrix_cell(md, "Pipe_Block_RTT/64", "LinuxPipe_Block_RTT/64"), "2.26×") << md;
  EXPECT_EQ(matrix_cell(md, "Pipe_Busy_RTT/64", "BoostLockfree_Busy_RTT/64"), "0.97×") << md;
  // Plots: drawn, or the report says why not.
  const bool plotted = fs::exists(dir_.path / "latency.png");
  EXPECT_EQ(plotted, md.find("Plots skipped") == std::string::npos);
}

TEST_F(Report, WithoutMatplotlibTheTablesAreStillWritten) {
  // A matplotlib package that fails to import shadows the real one.
  fs::create_directories(dir_.path / "fake" / "matplotlib");
  std::ofstream(dir_.path / "fake" / "matplotlib" / "__init__.py")
      << "raise ImportError('no matplotlib in this test')\n";
  const char* old = std::getenv("PYTHONPATH");
  const std::string saved = old ? old : "";
  ::setenv("PYTHONPATH", (dir_.path / "fake").c_str(), 1);
  const int rc = run_report(dir_.path / "out");
  if (old) {
    ::setenv("PYTHONPATH", saved.c_str(), 1);
  } else {
    ::unsetenv("PYTHONPATH");
  }
  ASSERT_EQ(rc, 0);
  const std::string md = slurp(dir_.path / "out" / "report.md");
  EXPECT_NE(md.find("Plots skipped"), std::string::npos) << md;
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "latency.png"));
  auto busy = cells(line_of(md, "| Pipe_Busy_RTT/64 |", "## pipe_bench"));
  ASSERT_EQ(busy.size(), 8u);
  EXPECT_EQ(busy[6], "**1.55×**");
}

TEST_F(Report, RatiosComeFromTheReferenceMeasuredBesideEachRoundTrip) {
  ASSERT_EQ(run_report(dir_.path, "beside", false), 0);
  const std::string md = slurp(dir_.path / "report.md");
  ASSERT_FALSE(md.empty());
  EXPECT_NE(md.find("reference measured beside each benchmark"), std::string::npos) << md;

  // The suite's floor read 120 ns, the floor beside the busy round trip
  // 400 ns: its ratio is the counter's 1.00x, not 400 / 120. A suite with
  // references beside gets a ninth column: the reference and its drift.
  auto busy = cells(line_of(md, "| Pipe_Busy_RTT/64 |", "## pipe_bench"));
  ASSERT_EQ(busy.size(), 9u) << md;
  EXPECT_EQ(busy[2], "400 ns");
  EXPECT_EQ(busy[6], "**1.00×**");
  EXPECT_EQ(busy[8], "400 ns floor (+5%)");
  // The blocking one against its futex beside it, which drifted -30%.
  auto block = cells(line_of(md, "| Pipe_Block_RTT/64 |", "## pipe_bench"));
  ASSERT_EQ(block.size(), 9u);
  EXPECT_EQ(block[7], "**0.50×**");
  EXPECT_EQ(block[8], "100.0 µs futex (-30% **unreliable**)");
  // No reference beside it: the suite's futex, 110 / 100.
  auto pipe = cells(line_of(md, "| LinuxPipe_Block_RTT/64 |", "## pipe_bench"));
  ASSERT_EQ(pipe.size(), 9u);
  EXPECT_EQ(pipe[7], "**1.10×**");
  EXPECT_EQ(pipe[8], "—");

  // Summary: ratio, where the reference came from, its p50 and drift.
  auto s_busy = cells(line_of(md, "| Pipe_Busy_RTT/64 |", "## Summary"));
  ASSERT_EQ(s_busy.size(), 8u) << md;
  EXPECT_EQ(s_busy[4], "1.00×");
  EXPECT_EQ(s_busy[5], "floor (beside)");
  EXPECT_EQ(s_busy[6], "400 ns");
  EXPECT_EQ(s_busy[7], "+5%");
  auto s_block = cells(line_of(md, "| Pipe_Block_RTT/64 |", "## Summary"));
  ASSERT_EQ(s_block.size(), 8u);
  EXPECT_EQ(s_block[5], "futex (beside)");
  EXPECT_EQ(s_block[7], "-30% **unreliable**");
  auto s_pipe = cells(line_of(md, "| LinuxPipe_Block_RTT/64 |", "## Summary"));
  ASSERT_EQ(s_pipe.size(), 8u);
  EXPECT_EQ(s_pipe[4], "1.10×");
  EXPECT_EQ(s_pipe[5], "futex (suite)");
  EXPECT_NE(md.find("1 of 4 round trips with a reference beside them are unreliable"),
            std::string::npos);
  // The queue's busy round trip against the pipe's of the same suite, each
  // over the floor beside it: 1.20x / 1.00x (not 600 ns / 400 ns).
  EXPECT_NE(md.find("Queue_Busy_RTT/64 against Pipe_Busy_RTT/64 (each over its floor): "
                    "**1.20×** (1.20× / 1.00×)"),
            std::string::npos)
      << md;

  // Matrix through the references beside: Boost.Lockfree 1.50x against the
  // pipe's 1.00x; pipe(2) 1.10x (suite futex) against 0.50x, unreliable.
  EXPECT_EQ(matrix_cell(md, "Pipe_Busy_RTT/64", "BoostLockfree_Busy_RTT/64"), "1.50×") << md;
  EXPECT_EQ(matrix_cell(md, "Pipe_Block_RTT/64", "LinuxPipe_Block_RTT/64"), "2.20× (unreliable)")
      << md;
}

}  // namespace
}  // namespace shmbus
