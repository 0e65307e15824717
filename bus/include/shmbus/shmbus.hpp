// shmbus — umbrella header: everything a user of the bus includes.
#pragma once

#include "shmbus/connection.hpp"
#include "shmbus/error.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/shared_memory.hpp"
#include "shmbus/version.hpp"
#include "shmbus/wait.hpp"
