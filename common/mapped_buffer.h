// MappedBuffer: a large zero-initialized byte buffer backed by an anonymous mmap. Pages cost memory
// only once touched and are returned to the OS the moment the buffer is freed, so resident-memory
// figures for big tables are exact. Not thread-safe; owners synchronize access.
#ifndef TESSERA_COMMON_MAPPED_BUFFER_H_
#define TESSERA_COMMON_MAPPED_BUFFER_H_

#include <cstddef>

namespace tessera {

class MappedBuffer {
 public:
  MappedBuffer() = default;
  // Maps `bytes` zero bytes. Aborts if the kernel refuses (out of address space).
  explicit MappedBuffer(size_t bytes);
  ~MappedBuffer();
  MappedBuffer(MappedBuffer&& other) noexcept;
  MappedBuffer& operator=(MappedBuffer&& other) noexcept;
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;

  char* data() const { return data_; }
  size_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(data_);
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_MAPPED_BUFFER_H_
