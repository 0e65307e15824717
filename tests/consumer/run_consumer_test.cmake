# Installs the already-built shmbus into a scratch prefix, then configures
# and builds tests/consumer/project against it with find_package(shmbus),
# and runs the result. Invoked by ctest as `cmake -P`.
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
set(_flags "")
if(SANITIZE)
  set(_flags "-fsanitize=${SANITIZE}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer/project
                        -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
                        "-DCMAKE_CXX_FLAGS=${_flags}" "-DCMAKE_EXE_LINKER_FLAGS=${_flags}"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed: ${rc}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "the consumer exited with ${rc}")
endif()
if(EXISTS ${WORK_DIR}/build/consumer_bridge)
  execute_process(COMMAND ${WORK_DIR}/build/consumer_bridge RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "the bridge consumer exited with ${rc}")
  endif()
elseif(EXISTS ${BINARY_DIR}/bridge)
  message(FATAL_ERROR "shmbus was built with the bridge, but find_package(shmbus COMPONENTS bridge) did not find it")
endif()
