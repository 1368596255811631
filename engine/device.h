// device.h: where a tensor's storage lives.
#pragma once
#include <cstdint>

namespace mg {

enum class Device : uint8_t { CPU = 0, CUDA = 1 };
constexpr int kNumDevices = 2;

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

}  // namespace mg
