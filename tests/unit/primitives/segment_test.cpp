#include "shmbus/detail/segment.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <thread>

#include "shmbus/detail/fault.hpp"
#include "shmbus/error.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/shared_memory.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::SegmentGuard;
using test::unique_name;

using test::code_of;

// Opens the raw file behind a segment to damage it the way a buggy peer or
// an operator could.
int raw_fd(const std::string& name) {
  int fd = ::open(test::shm_path(name).c_str(), O_RDWR);
  EXPECT_GE(fd, 0);
  return fd;
}

TEST(SharedMemory, CreateOpenSeeEachOthersBytes) {
  SegmentGuard g(unique_name("shm"));
  auto a = SharedMemory::create(g.name(), 100);
  EXPECT_EQ(a.size(), 100u);
  std::memcpy(a.buf().data(), "hello", 5);
  auto b = SharedMemory::open(g.name());
  EXPECT_EQ(b.size(), 100u);
  EXPECT_EQ(std::memcmp(b.buf().data(), "hello", 5), 0);
  EXPECT_EQ(b.name(), g.name());
}

TEST(SharedMemory, OpenOrCreateCreatesThenOpens) {
  SegmentGuard g(unique_name("ooc"));
  auto a = SharedMemory::open_or_create(g.name(), 32);
  a.buf()[3] = std::byte{7};
  auto b = SharedMemory::open_or_create(g.name(), 32);
  EXPECT_EQ(b.buf()[3], std::byte{7});
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open_or_create(g.name(), 64); }),
            Errc::invalid_argument);
}

TEST(SharedMemory, CreatedWithMode0600ByDefault) {
  SegmentGuard g(unique_name("mode"));
  auto a = SharedMemory::create(g.name(), 8);
  struct stat st {};
  ASSERT_EQ(::stat(test::shm_path(g.name()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(SharedMemory, UnlinkRemovesTheNameButKeepsTheMapping) {
  SegmentGuard g(unique_name("unl"));
  auto a = SharedMemory::create(g.name(), 8);
  a.buf()[0] = std::byte{1};
  a.unlink();
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::not_found);
  EXPECT_EQ(a.buf()[0], std::byte{1});
}

// shared_memory.hpp: "Unmaps now; buf() is empty afterwards". A closed
// segment's size was 0 minus the header's: buf() was a huge span at a
// bogus address, size() a huge number.
TEST(SharedMemory, CloseLeavesAnEmptyBufferAndSizeZero) {
  SegmentGuard g(unique_name("cls"));
  auto a = SharedMemory::create(g.name(), 64);
  a.close();
  EXPECT_TRUE(a.buf().empty());
  EXPECT_EQ(a.buf().data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  a.close();  // twice: nothing
  SharedMemory anon{16};
  SharedMemory moved = std::move(anon);
  EXPECT_EQ(moved.size(), 16u);
  EXPECT_TRUE(anon.buf().empty());  // NOLINT(bugprone-use-after-move): the moved-from state
  EXPECT_EQ(anon.size(), 0u);       // NOLINT(bugprone-use-after-move)
}

TEST(Segment, InvalidNamesAreRejected) {
  for (std::string bad : {std::string(""), std::string("a/b"), std::string(".hidden"),
                          std::string("sp ace"), std::string(201, 'x'), std::string("é")}) {
    EXPECT_EQ(code_of([&] { (void)SharedMemory::create(bad, 8); }), Errc::invalid_name) << bad;
  }
}

TEST(Segment, ErrorsForEachFailure) {
  SegmentGuard g(unique_name("errs"));
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::not_found);
  auto a = SharedMemory::create(g.name(), 64);
  EXPECT_EQ(code_of([&] { (void)SharedMemory::create(g.name(), 64); }), Errc::already_exists);
  EXPECT_EQ(
      code_of([&] { (void)detail::Segment::open(g.name(), ObjectKind::queue, detail::kBytesTag); }),
      Errc::wrong_kind);
  EXPECT_EQ(code_of([&] {
              (void)detail::Segment::open(g.name(), ObjectKind::shared_memory,
                                          detail::type_tag<double>());
            }),
            Errc::wrong_type);
  EXPECT_EQ(code_of([&] { (void)SharedMemory::create(g.name() + "x", 0); }),
            Errc::invalid_argument);
}

TEST(Segment, WrongKindMessageNamesBoth) {
  SegmentGuard g(unique_name("msg"));
  auto a = SharedMemory::create(g.name(), 64);
  try {
    (void)detail::Segment::open(g.name(), ObjectKind::pipe, detail::kBytesTag);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.object(), g.name());
    EXPECT_NE(std::string(e.what()).find("holds a shared_memory, expected a pipe"),
              std::string::npos)
        << e.what();
  }
}

TEST(Segment, TruncatedFileIsReported) {
  SegmentGuard g(unique_name("trunc"));
  auto a = SharedMemory::create(g.name(), 8192);
  int fd = raw_fd(g.name());
  ASSERT_EQ(::ftruncate(fd, detail::kHeaderSize + 100), 0);
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::truncated);
  ASSERT_EQ(::ftruncate(fd, 100), 0);
  SegmentOptions quick;
  quick.open_timeout = std::chrono::milliseconds(20);
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name(), quick); }), Errc::truncated);
  EXPECT_EQ(code_of([&] { (void)inspect_segment(g.name()); }), Errc::truncated);
  ::close(fd);
}

TEST(Segment, CorruptedMagicVersionAndStateAreReported) {
  SegmentGuard g(unique_name("corrupt"));
  auto a = SharedMemory::create(g.name(), 64);
  auto& h = *reinterpret_cast<detail::SegmentHeader*>(a.buf().data() - detail::kHeaderSize);
  h.version = 3;  // a format this build does not read
  try {
    (void)SharedMemory::open(g.name());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::wrong_version);
    EXPECT_NE(std::string(e.what()).find("format version 3, expected 2"), std::string::npos);
  }
  h.version = detail::kFormatVersion;
  h.magic ^= 0xff;
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::corrupted);
  EXPECT_EQ(code_of([&] { (void)inspect_segment(g.name()); }), Errc::corrupted);
  h.magic ^= 0xff;
  h.state.store(77);
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::corrupted);
  h.state.store(1);
  h.payload_size += 4096;
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::corrupted);
}

TEST(Segment, NeverReadyTimesOut) {
  SegmentGuard g(unique_name("notready"));
  auto a = SharedMemory::create(g.name(), 64);
  auto& h = *reinterpret_cast<detail::SegmentHeader*>(a.buf().data() - detail::kHeaderSize);
  h.state.store(0);  // as if the creator died while initialising
  SegmentOptions quick;
  quick.open_timeout = std::chrono::milliseconds(30);
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name(), quick); }), Errc::not_ready);
  EXPECT_EQ(inspect_segment(g.name()).state, "initialising");
}

TEST(Segment, PermissionDeniedWhenModeForbids) {
  SegmentGuard g(unique_name("perm"));
  auto a = SharedMemory::create(g.name(), 64);  // mode 0600, owned by us
  // Root ignores file modes, so the opener is a child that, when we are
  // root, first becomes 'nobody'; otherwise the mode is cleared.
  if (::geteuid() != 0) {
    ASSERT_EQ(::chmod(test::shm_path(g.name()).c_str(), 0), 0);
  }
  pid_t child = test::fork_child([&] {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 2;
    try {
      (void)SharedMemory::open(g.name());
    } catch (const Error& e) {
      return e.code() == Errc::permission_denied ? 0 : 3;
    }
    return 4;
  });
  auto st = test::wait_child(child);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

TEST(Segment, AttachmentTableRecordsAndForgets) {
  SegmentGuard g(unique_name("attach"));
  auto a = SharedMemory::create(g.name(), 64);
  {
    auto b = SharedMemory::open(g.name());
    auto info = inspect_segment(g.name());
    ASSERT_EQ(info.attached.size(), 2u);
    EXPECT_EQ(info.attached[0].id, this_process());
    EXPECT_TRUE(info.attached[0].alive);
    EXPECT_EQ(info.creator, this_process());
    EXPECT_EQ(info.kind, ObjectKind::shared_memory);
  }
  EXPECT_EQ(inspect_segment(g.name()).attached.size(), 1u);
  a.close();
  EXPECT_EQ(inspect_segment(g.name()).attached.size(), 0u);
}

TEST(Segment, AttachmentTableFullIsReported) {
  SegmentGuard g(unique_name("full"));
  SegmentOptions two;
  two.max_attached = 2;
  auto a = SharedMemory::create(g.name(), 64, two);
  auto b = SharedMemory::open(g.name());
  EXPECT_EQ(code_of([&] { (void)SharedMemory::open(g.name()); }), Errc::attach_table_full);
}

TEST(Segment, ListFindsOurSegments) {
  SegmentGuard g(unique_name("list"));
  auto a = SharedMemory::create(g.name(), 64);
  auto names = list_segments();
  EXPECT_NE(std::find(names.begin(), names.end(), g.name()), names.end());
}

// [segment.unlink] A remover held between its identity check and its
// unlink (holding the file's lock) cannot lose a race to a remove and
// re-create of the name: the other remover waits for the lock, finds the
// name gone, and the file made afresh under it is never taken away.
TEST(Segment, AnUnlinkHeldAfterItsCheckNeverRemovesAFileMadeUnderTheNameSince) {
  SegmentGuard g(unique_name("unl"));
  std::optional<SharedMemory> old_one = SharedMemory::create(g.name(), 64);
  const SegmentInfo old_info = inspect_segment(g.name());
  test::hold_reset();
  detail::set_fault_hook(&test::hold_hook);
  std::atomic<bool> removed_old{false};
  std::thread remover([&] {
    test::hold_me_at(detail::FaultPoint::unlink_checked);
    removed_old.store(detail::Segment::unlink_if_same(g.name(), old_info.creator.pack(),
                                                      old_info.created_unix_ns));
  });
  std::atomic<pid_t> tid{0};
  std::atomic<bool> made{false};
  std::optional<SharedMemory> new_one;
  std::thread maker;
  test::HoldJoin join{remover, maker};
  ASSERT_TRUE(test::poll_until([&] { return test::hold_state() == 1; }));
  maker = std::thread([&] {
    tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
    (void)detail::Segment::unlink(g.name());  // waits for the remover's lock
    new_one.emplace(SharedMemory::create(g.name(), 64));
    made.store(true);
  });
  ASSERT_TRUE(test::poll_until(
      [&] { return made.load() || (tid.load() != 0 && test::thread_sleeping(tid.load())); }));
  test::hold_release();
  remover.join();
  maker.join();
  EXPECT_TRUE(removed_old.load());
  ASSERT_TRUE(new_one.has_value());
  // The name still names the new file (inspect throws not_found if it went).
  const SegmentInfo now = inspect_segment(g.name());
  EXPECT_NE(now.created_unix_ns, old_info.created_unix_ns);
  // And an identity that is not the name's removes nothing.
  EXPECT_FALSE(
      detail::Segment::unlink_if_same(g.name(), old_info.creator.pack(), old_info.created_unix_ns));
  EXPECT_NO_THROW((void)inspect_segment(g.name()));
}

}  // namespace
}  // namespace shmbus
